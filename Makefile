# ringsip: build, run, test and benchmark. `make help` lists the targets.
# Every target that needs Debian packages installs the missing ones itself (scripts/ensure-debs:
# one dpkg-query when all are there, apt-get only when something is missing).

SHELL := /bin/bash
.DEFAULT_GOAL := build

SWIFT    ?= swift
# Two cores: Swift builds must never overlap (other checkouts, other sessions).
LOCK     := flock /tmp/ringsip-build.lock
RINGSIPD ?= .build/release/ringsipd
# Evaluated when used, i.e. after test-deps has had a chance to install pytest.
PYTHON    = $(shell scripts/find-python)

DEPS_DEBS := liburing-dev libmariadb-dev libcurl4-openssl-dev pkg-config
# linux-perf: the perf/profile smoke test in `make test` (it skips where perf cannot sample).
# mariadb-server: the DatabaseRunner tests (Tests/OpsTests) run against a real local server.
# kamailio-utils-modules, kamailio-mysql-modules: Kamailio's http_client and db_mysql (perf scenarios async-rest,
# blocking-rest, async-db and their smoke tests).
# freeradius: the RadiusRunner tests start a private copy (its config folder in a temp dir, on free ports).
# Kamailio's http_async_client (perf scenario async-rest) is not packaged: scripts/ensure-kamailio-http-async
# builds it from the Debian source package of the installed kamailio.
# baresip: a real phone in the registrar tests (driven through its ctrl_tcp module).
# gcc, libc6-dev: perf/floor (a small C program the perf harness builds on first use; its smoke tests run here).
TEST_DEBS := sip-tester kamailio kamailio-utils-modules kamailio-mysql-modules procps util-linux linux-perf mariadb-server \
             freeradius freeradius-utils openssl baresip gcc libc6-dev
PERF_DEBS := linux-perf valgrind

RUN_ARGS     ?= -f etc/ringsip.cfg
# `make fuzz` runs this many inputs per target; `make test` a bounded smoke run of FUZZ_SMOKE_RUNS.
FUZZ_RUNS       ?= 200000
FUZZ_SMOKE_RUNS ?= 10000
# perf/udpfuzz: mutated datagrams to each of a stateless and a stateful daemon (Tests/integration runs 20,000).
FUZZ_DATAGRAMS  ?= 1000000
PYTEST_ARGS  ?=
SCENARIO     ?= stateless
BENCH_ARGS   ?= --rate 1000
COMPARE_ARGS ?=
PROFILE_ARGS ?=

.PHONY: help deps test-deps perf-deps build run test test-asan fuzz fuzz-build unit-test integration bench compare profile clean distclean

help:
	@echo "make deps        install the Debian packages needed to build and run (if missing)"
	@echo "make test-deps   deps + sipp, kamailio (+ http_async_client built), mariadb-server, freeradius (mariadb started, test user made), pytest (if missing)"
	@echo "make perf-deps   test-deps + linux-perf, valgrind (for profiling)"
	@echo "make build       swift build -c release"
	@echo "make run         build and run $(RINGSIPD) $(RUN_ARGS)  (RUN_ARGS=... to change)"
	@echo "make test        build, swift test, then the integration suite (Tests/integration)"
	@echo "make test-asan   the async integration tests against ringsipd built with AddressSanitizer (any report fails)"
	@echo "make fuzz        the libFuzzer targets (script front end, SIP parser/builders, RADIUS responses, MariaDB result cells and HTTP bodies), $(FUZZ_RUNS) inputs each (FUZZ_RUNS=...),"
	@echo "                 then $(FUZZ_DATAGRAMS) mutated datagrams against running daemons (perf/udpfuzz, FUZZ_DATAGRAMS=...)"
	@echo "make integration only the integration suite, against the existing build (PYTEST_ARGS=...)"
	@echo "make bench       perf/bench $(SCENARIO) --target ringsip $(BENCH_ARGS)  (SCENARIO=stateless|register|cancel, BENCH_ARGS=...)"
	@echo "make compare     perf/compare $(SCENARIO) $(COMPARE_ARGS): ringsip vs kamailio (and OpenSIPS if installed), CPU us per call"
	@echo "make profile     perf/profile $(SCENARIO) $(PROFILE_ARGS): flame graph + top functions under perf/out/"
	@echo "make clean       swift package clean, remove perf/out;  make distclean: remove .build"

deps:
	@scripts/ensure-debs $(DEPS_DEBS)

test-deps: deps
	@scripts/ensure-debs $(TEST_DEBS)
	@scripts/ensure-mariadb
	@scripts/ensure-kamailio-http-async
	@scripts/find-python >/dev/null || scripts/ensure-debs python3-pytest
	@scripts/find-python >/dev/null || { echo "make: no python3 with pytest, even after installing python3-pytest" >&2; exit 1; }

perf-deps: test-deps
	@scripts/ensure-debs $(PERF_DEBS)

build: deps
	$(LOCK) $(SWIFT) build -c release

run: build
	$(RINGSIPD) $(RUN_ARGS)

test: test-deps
	$(LOCK) $(SWIFT) build -c release
	$(LOCK) $(SWIFT) test
	perf/alloc
	$(PYTHON) -m pytest -q Tests/integration $(PYTEST_ARGS)
	$(MAKE) --no-print-directory fuzz-build
	scripts/run-fuzz $(FUZZ_SMOKE_RUNS)

# libFuzzer targets (Fuzz/): coverage-guided, with AddressSanitizer, in their own build directory.
fuzz-build: deps
	$(LOCK) $(SWIFT) build -c release --product fuzz-script --build-path .build-fuzz -Xswiftc -sanitize=fuzzer,address -Xswiftc -DFUZZING
	$(LOCK) $(SWIFT) build -c release --product fuzz-sip --build-path .build-fuzz -Xswiftc -sanitize=fuzzer,address -Xswiftc -DFUZZING
	$(LOCK) $(SWIFT) build -c release --product fuzz-radius --build-path .build-fuzz -Xswiftc -sanitize=fuzzer,address -Xswiftc -DFUZZING
	$(LOCK) $(SWIFT) build -c release --product fuzz-results --build-path .build-fuzz -Xswiftc -sanitize=fuzzer,address -Xswiftc -DFUZZING

fuzz: fuzz-build
	scripts/run-fuzz $(FUZZ_RUNS)
	$(LOCK) $(SWIFT) build -c release
	$(PYTHON) perf/udpfuzz --datagrams $(FUZZ_DATAGRAMS)

# The async tests against a debug ringsipd built with AddressSanitizer. Store blocks ringsip recycles itself are
# poisoned while free (MessageStore), so a view outliving its block traps like a use after free. Reports go to
# files; any file fails the target. Leak checking is off: the daemon exits without tearing its shards down.
ASAN_DIR   := /tmp/ringsip-asan
# The integration tests that are not about rates or timing (perf/*, overload, relay at 600 calls/s, the UDP
# mutation run: a sanitizer build is several times slower, sheds load sooner, and those measure speed as well).
ASAN_TESTS := Tests/integration/test_async.py Tests/integration/test_async_chains.py \
              Tests/integration/test_async_model.py Tests/integration/test_async_routes.py \
              Tests/integration/test_async_e2e.py Tests/integration/test_garbage.py \
              Tests/integration/test_reliability.py Tests/integration/test_rfc4475.py \
              Tests/integration/test_script.py Tests/integration/test_tm.py \
              Tests/integration/test_opensips_scripts.py Tests/integration/test_permissions.py \
              Tests/integration/test_domain.py Tests/integration/test_dialplan.py \
              Tests/integration/test_signals.py Tests/integration/test_cli.py \
              Tests/integration/test_registrar.py Tests/integration/test_registrar_db.py \
              Tests/integration/test_registrar_phones.py Tests/integration/test_auth.py \
              Tests/integration/test_acc.py Tests/integration/test_dialog.py Tests/integration/test_tcp.py

test-asan: test-deps
	$(LOCK) $(SWIFT) build -c debug -Xswiftc -sanitize=address --scratch-path .build-asan --product ringsipd
	rm -rf $(ASAN_DIR) && mkdir -p $(ASAN_DIR)
	# A test that fails is run once more (--lf): the sanitizer build is several times slower, and one timing
	# check (test_exec_past_its_timeout's child) has failed 4 times in ~20 runs here, never when run again or in
	# the release run; it prints the processes it sees. A sanitizer report fails the target either way.
	ASAN_OPTIONS=log_path=$(ASAN_DIR)/report:detect_leaks=0 RINGSIPD=.build-asan/debug/ringsipd \
		$(PYTHON) -m pytest -q $(ASAN_TESTS) $(PYTEST_ARGS) || \
	{ echo "make test-asan: running the failed tests once more"; \
	  ASAN_OPTIONS=log_path=$(ASAN_DIR)/report:detect_leaks=0 RINGSIPD=.build-asan/debug/ringsipd \
		$(PYTHON) -m pytest -q --lf $(ASAN_TESTS) $(PYTEST_ARGS); }
	@if ls $(ASAN_DIR)/report* >/dev/null 2>&1; then cat $(ASAN_DIR)/report*; echo "make test-asan: AddressSanitizer reported (above)" >&2; exit 1; fi

unit-test: deps
	$(LOCK) $(SWIFT) test

integration: test-deps
	$(PYTHON) -m pytest -q Tests/integration $(PYTEST_ARGS)

bench: test-deps build
	perf/bench $(SCENARIO) --target ringsip $(BENCH_ARGS)

compare: test-deps build
	perf/compare $(SCENARIO) $(COMPARE_ARGS)

profile: perf-deps build
	perf/profile $(SCENARIO) $(PROFILE_ARGS)

clean:
	-$(LOCK) $(SWIFT) package clean
	rm -rf perf/out
	find perf scripts Tests/integration -name __pycache__ -type d -prune -exec rm -rf {} +

distclean: clean
	rm -rf .build .build-asan .build-fuzz
