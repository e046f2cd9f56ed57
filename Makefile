# synfin — the two commands of the README's quick start, and a few helpers.
VENV    ?= .venv
PYTHON  ?= python3
PY      := $(VENV)/bin/python
DEMO    ?= samples/busy.pcap
APT_PKGS := tcpdump tshark tcptrace nftables iproute2 ethtool

.PHONY: demo test venv apt-deps lint samples pictures clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

venv: $(PY)
	$(PY) -m pip install --quiet -e .

## make demo: install into .venv and analyze a bundled sample
demo: venv
	$(VENV)/bin/synfin analyze $(DEMO)

## apt-deps: the Debian packages the tests use (real captures, peers to cross-check)
apt-deps:
	@missing=""; for c in tcpdump tshark tcptrace nft ip ethtool; do command -v $$c >/dev/null || missing=1; done; \
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
