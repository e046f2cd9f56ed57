# synfin — the two commands of the README's quick start, and a few helpers.
VENV    ?= .venv
PYTHON  ?= python3
PY      := $(VENV)/bin/python
DEMO    ?= samples/busy.pcap
APT_PKGS := tcpdump tshark tcptrace tcpreplay nftables iproute2 ethtool gcc libc6-dev libasan8 libubsan1 libpcap-dev chromium
# make sanitize / make fuzz: the engine built with ASan+UBSan and edge coverage (tests/fuzz/build.py), run
# from build/sanitize/ (a copy of the package, first on the path; PYTHONSAFEPATH keeps the current directory's
# analyzer/ out). Python is not instrumented, so the sanitizer runtimes are preloaded. SYNFIN_SANITIZED=1 tells
# tests that measure memory or time (meaningless under ASan's shadow memory and quarantine) to skip themselves.
SAN_DIR      := build/sanitize
SAN_ENGINE   ?= analyzer/_engine
FUZZ_SECONDS ?= 120
FUZZ_SEED    ?= 1
FUZZ_OUT     ?= build/fuzz-out
TEST_FUZZ_SECONDS ?= 60
SAN_TESTS    := tests/test_engine.py tests/test_bad_input.py tests/test_hardening.py tests/test_flood.py tests/test_pipes.py \
                tests/test_filter.py tests/test_where.py tests/test_fuzz.py tests/test_ladder_engine.py tests/test_api.py \
                tests/test_tunnels.py tests/test_rotated.py tests/test_report_columns.py tests/test_parallel.py
SAN_ENV = PYTHONPATH=$(CURDIR)/$(SAN_DIR):$(CURDIR) PYTHONSAFEPATH=1 SYNFIN_SANITIZED=1 \
  LD_PRELOAD="$$(gcc -print-file-name=libasan.so):$$(gcc -print-file-name=libubsan.so)" \
  ASAN_OPTIONS=detect_leaks=0:halt_on_error=1:abort_on_error=1 \
  UBSAN_OPTIONS=halt_on_error=1:abort_on_error=1:print_stacktrace=1

.PHONY: demo test venv cc apt-deps lint samples pictures clean sanitize fuzz sanitize-build

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

## apt-deps: the Debian packages the tests use (real captures, peers to cross-check, gcc for the engine,
## libpcap-dev for its BPF filters: without it the engine builds without them; chromium renders synfin report's HTML;
## tcpreplay replays captures into a veth for the live tests)
apt-deps:
	@missing=""; for c in tcpdump tshark tcptrace tcpreplay editcap mergecap nft ip ethtool gcc chromium; do command -v $$c >/dev/null || missing=1; done; \
	for lib in libasan.so libubsan.so; do [ -e "$$(gcc -print-file-name=$$lib 2>/dev/null)" ] || missing=1; done; \
	printf '#include <pcap.h>\nint main(void){return !pcap_open_dead(1,9);}\n' | gcc -x c - -lpcap -o /dev/null 2>/dev/null || missing=1; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(APT_PKGS) >/dev/null; \
	  else echo "note: not root, cannot apt-get install $(APT_PKGS); the tests that need them will be skipped"; fi; \
	fi

## make test: install everything the tests need and run the whole suite, then the sanitizer run (60 s of fuzzing)
test: $(PY) apt-deps
	$(PY) -m pip install --quiet -e '.[test]'
	$(PY) -m ruff check analyzer tests samples docs notebooks benchmarks
	$(PY) -m pytest -q
	@if command -v gcc >/dev/null && [ -e "$$(gcc -print-file-name=libasan.so)" ]; then \
	  $(MAKE) --no-print-directory sanitize FUZZ_SECONDS=$(TEST_FUZZ_SECONDS); \
	else echo "note: no gcc with libasan/libubsan (make apt-deps as root): the sanitizer run is skipped"; fi

sanitize-build: $(PY)
	@command -v gcc >/dev/null || { echo "make sanitize needs gcc (make apt-deps)"; exit 1; }
	$(PY) -m tests.fuzz.build --out $(SAN_DIR) --engine $(SAN_ENGINE)
	$(SAN_ENV) $(PY) -m tests.fuzz.build --out $(SAN_DIR) --check

## make sanitize: the engine under ASan+UBSan: the engine tests (samples, crafted and damaged captures; not the
## kernel-traffic ones, whose tcpdump and netns helpers would inherit the preloaded runtimes), then fuzzing
sanitize: sanitize-build
	$(SAN_ENV) $(PY) -m pytest -q -p no:cacheprovider --import-mode=append --capture=sys -m "not kernel and not big" $(SAN_TESTS)
	$(SAN_ENV) $(PY) -m tests.fuzz --seconds $(FUZZ_SECONDS) --seed $(FUZZ_SEED) --out $(FUZZ_OUT)

## make fuzz FUZZ_SECONDS=600: only the fuzzer, on the sanitized engine (findings in $(FUZZ_OUT)/findings)
fuzz: sanitize-build
	$(SAN_ENV) $(PY) -m tests.fuzz --seconds $(FUZZ_SECONDS) --seed $(FUZZ_SEED) --out $(FUZZ_OUT)

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
