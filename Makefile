# The two commands of the README. Each creates .venv when it is missing, so both work on a fresh
# clone of a fresh machine (Python >= 3.10 with venv; the test databases as described in README).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test test-fast test-under-load test-image setup lint format

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

run: $(STAMP)
	$(BIN)/hpsearch run studies/quickstart.yaml
	$(BIN)/hpsearch best studies/quickstart.yaml

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# The dashboard test drives a real headless browser: Debian's chromium and its driver. Installing
# them needs root (CI runs as root); without them a developer's run skips that one test.
.PHONY: test-deps
test-deps:
	test -x /usr/bin/chromium && test -x /usr/bin/chromedriver || \
	  { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium chromium-driver; }

# Two test processes (pytest-xdist; each has databases of its own): the suite waits on worker
# processes and database servers far more than it computes, so two halve its time on 2 cores.
test: $(STAMP) lint test-deps
	$(BIN)/python -m pytest -n 2 --dist worksteal

# The container image, built for real with buildah from a locally made base (root; minutes cold).
test-image: $(STAMP)
	$(BIN)/python -m pytest -m image tests/test_image.py

# The inner loop: no database server, no browser, no multi-second process or training tests.
test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 --dist worksteal -m "not db and not browser and not slow"

# The suite beside a CPU hog: one busy process per core at the tests' own priority, killed when
# the run ends however it ends. No test may depend on wall-clock speed, so this must stay green.
# Narrow it with PYTEST_ARGS, e.g. `make test-under-load PYTEST_ARGS="-n 0 tests/test_worker.py"`.
PYTEST_ARGS ?= -n 2 --dist worksteal
test-under-load: $(STAMP)
	hogs=""; trap 'kill $$hogs 2>/dev/null' EXIT; trap 'exit 130' INT TERM; \
	for _ in $$(seq "$$(nproc)"); do yes > /dev/null & hogs="$$hogs $$!"; done; \
	$(BIN)/python -m pytest $(PYTEST_ARGS)
