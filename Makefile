# The few commands a newcomer needs. Everything runs from .venv, made here.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
DURATION ?= 60
JOBS ?= 2

.PHONY: demo test lint lint-python lint-rust rust-test unit runtime tools sdks kafka bench chaos soak mutants clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(BIN)/uv: | $(BIN)/python
	$(BIN)/python -m pip install --quiet 'uv>=0.9,<1'

CARGO ?= cargo
CORE := processors/core
CORE_SOURCES := $(CORE)/Cargo.toml $(wildcard $(CORE)/src/*.rs $(CORE)/src/*/*.rs)

# The editable install builds the compiled core (maturin, cargo) into processors/.
$(VENV)/.installed: pyproject.toml $(CORE_SOURCES) | $(BIN)/uv
	$(BIN)/uv pip install --quiet --python $(BIN)/python -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml $(CORE_SOURCES) | $(BIN)/uv
	$(BIN)/uv pip install --quiet --python $(BIN)/python -e '.[dev]'
	touch $(VENV)/.installed $@

demo: $(VENV)/.installed runtime kafka  ## stream simulated shoppers through the embedded stack and watch
	$(BIN)/segstream demo --duration $(DURATION)

lint: lint-python lint-rust  ## ruff, mypy, cargo fmt and clippy

lint-python: $(VENV)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# After the editable install, so that its cargo build and these do not wait on each other.
lint-rust: $(VENV)/.installed-dev
	cd $(CORE) && $(CARGO) fmt --check && $(CARGO) clippy --quiet --all-targets -- -D warnings

rust-test: $(VENV)/.installed-dev  ## the core's Rust tests
	cd $(CORE) && $(CARGO) test --quiet

# Debian packages: Java, Maven and redis-server run the embedded stack (`runtime`); the tests
# also use promtool and prometheus, docker-compose (to validate the file) and chromium
# (browser SDKs in a real browser).
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT_INSTALL := $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get \
  install -y -qq --no-install-recommends
runtime:  ## install Debian's Java, Maven and redis-server when missing
	@command -v java >/dev/null && command -v mvn >/dev/null && command -v redis-server >/dev/null \
	  || { $(APT_INSTALL) default-jre-headless maven redis-server >/dev/null; }
tools: runtime  ## also Debian's prometheus, docker-compose and chromium, for the tests
	@command -v promtool >/dev/null && command -v prometheus >/dev/null \
	  && command -v docker-compose >/dev/null && command -v chromium >/dev/null \
	  || { $(APT_INSTALL) prometheus docker-compose chromium >/dev/null; }

# Apache Kafka's broker jars from Maven Central, into a cache every clone on this machine
# reuses (streams/tools/embedded/apache_kafka.py names the same version and folder).
KAFKA_VERSION := 4.4.0
KAFKA_LIBS := $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/segstream/apache-kafka-$(KAFKA_VERSION)
$(KAFKA_LIBS)/.fetched:
	$(MAKE) --no-print-directory runtime
	mvn --quiet --batch-mode --file deploy/kafka/pom.xml dependency:copy-dependencies \
	  -Dkafka.version=$(KAFKA_VERSION) -DoutputDirectory=$(KAFKA_LIBS)
	touch $@
kafka: $(KAFKA_LIBS)/.fetched  ## fetch Apache Kafka (Maven) when it is not in the cache

# The tracking SDKs from npm and the browser driver, into a folder the tests own.
SDKS := tests/sdk/node_modules/.package-lock.json
$(SDKS): tests/sdk/package.json tests/sdk/package-lock.json
	npm ci --prefix tests/sdk --no-audit --no-fund --ignore-scripts --loglevel=error
	touch $@
sdks: $(SDKS)  ## install the SDKs the collector is tested with (npm)

# Lint, the Rust tests and the downloads run two at a time (mypy on one core while cargo
# has the other); then the test files run in JOBS processes, each with its own broker and
# Redis.
test:  ## lint, then every test (integration tests start their own broker and Redis)
	$(MAKE) --no-print-directory -j2 lint rust-test tools sdks kafka
	$(BIN)/pytest -n $(JOBS) --dist loadfile

bench: $(VENV)/.installed runtime kafka  ## segstream against a naive Faust pipeline and the raw limit (bench.json)
	$(BIN)/segstream bench --rules processors/rules/computed-bench.yaml --json bench.json

chaos: $(VENV)/.installed-dev tools kafka  ## the fault suite and the fuzzers at full size (about 15 minutes)
	FAULT_EVENTS=200000 FUZZ_PAYLOADS=100000 FUZZ_EVENTS=20000 SCHEMA_EXAMPLES=200 \
	  $(BIN)/pytest --timeout 3600 tests/integration/test_effectively_once.py \
	  tests/processors/test_fuzz.py tests/integration/test_fuzz.py tests/integration/test_openapi_fuzz.py

soak: $(VENV)/.installed-dev runtime kafka  ## 10 minutes of steady load on one worker: flat memory, bounded lag
	SOAK_SECONDS=600 SOAK_RATE=3000 $(BIN)/pytest -rP --timeout 1200 tests/integration/test_soak.py

# cargo-mutants from crates.io, into cargo's own bin folder, when it is missing. The unit
# and oracle-case tests judge each mutant (--all-targets leaves the doc examples out).
MUTANTS_VERSION := 27.1.0
MUTATED := src/windows.rs src/timing.rs src/features.rs src/computed.rs src/patterns.rs
mutants:  ## mutation testing of the core's time logic (about 25 minutes; docs/operating.md)
	@$(CARGO) mutants --version >/dev/null 2>&1 \
	  || $(CARGO) install --quiet --locked cargo-mutants --version $(MUTANTS_VERSION)
	mkdir -p .segstream
	cd $(CORE) && $(CARGO) mutants --jobs $(JOBS) --output $(CURDIR)/.segstream \
	  $(foreach file,$(MUTATED),--file $(file)) -- --all-targets

unit: rust-test  ## the fast tests only, no I/O
	$(BIN)/pytest processors state streams tests/processors tests/streams

clean:
	rm -rf $(VENV) .segstream .pytest_cache .mypy_cache .ruff_cache tests/sdk/node_modules \
	  $(CORE)/target processors/_core*.so
