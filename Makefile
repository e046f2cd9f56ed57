# synfin — the two commands of the README's quick start, and a few helpers.
VENV    ?= .venv
PYTHON  ?= python3
PY      := $(VENV)/bin/python
DEMO    ?= samples/busy.pcap
APT_PKGS := tcpdump tshark tcptrace nftables iproute2 ethtool gcc libc6-dev

.PHONY: demo test venv cc apt-deps lint samples pictures clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

venv: $(PY) cc
	$(PY) -m pip install --quiet -e .

## cc: a C compiler for the compiled engine (without one, synfin falls back to the slower reference)
cc:
	@command -v gcc >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq gcc libc6-dev >/dev/null; \
	  else echo "note: no C compiler and not root: synfin will run without its compiled engine"; fi; }

## make demo: install into .venv and analyze a bundled sample
demo: venv
	$(VENV)/bin/synfin analyze $(DEMO)

## apt-deps: the Debian packages the tests use (real captures, peers to cross-check, gcc for the engine)
apt-deps:
	@missing=""; for c in tcpdump tshark tcptrace nft ip ethtool gcc; do command -v $$c >/dev/null || missing=1; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(APT_PKGS) >/dev/null; \
	  else echo "note: not root, cannot apt-get install $(APT_PKGS); the tests that need them will be skipped"; fi; \
	fi

## make test: install everything the tests need and run the whole suite
test: $(PY) apt-deps
	$(PY) -m pip install --quiet -e '.[test]'
	$(PY) -m ruff check analyzer tests samples docs notebooks benchmarks
	$(PY) -m pytest -q

lint: $(PY)
	$(PY) -m ruff check analyzer tests samples docs notebooks benchmarks

## samples: regenerate every capture in samples/ with the real kernel (root)
samples: venv
	$(PY) samples/generate.py

## pictures: regenerate the README's ladder pictures (docs/img/) from samples/
pictures: venv
	$(PY) docs/make_pictures.py

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
