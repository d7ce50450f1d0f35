# fashion_jax: `make train` and `make test` work on a fresh Debian/Ubuntu machine.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
DATA   := /usr/share/datasets/fashion-mnist
STAMP  := $(VENV)/.installed
WORKDIR ?= runs/cnn

.PHONY: install data train lint format test bench experiments experiments-quick clean

install: $(STAMP) data

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

# The real IDX files: a local copy wins; otherwise apt, when we are root and apt exists; otherwise
# the official files are downloaded (and SHA-256 checked) into the user cache folder. A failed
# download does not fail the install: the tests that need the data skip, and train says why.
data:
	@if [ -n "$$FASHION_JAX_DATA" ] || [ -f $(DATA)/train-images-idx3-ubyte.gz ] || [ -f $(DATA)/train-images-idx3-ubyte ]; then \
	  echo "data: found"; \
	elif command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	  apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist; \
	else \
	  $(VENV)/bin/fashion-jax data --download || echo "data: not downloaded (see above); set FASHION_JAX_DATA or pass --data-dir"; \
	fi

# The chapter's final setup: CNN, Adam, dropout 0.4, up to 20 epochs, patience 2, restore best.
train: install
	$(VENV)/bin/fashion-jax train --preset chapter --workdir $(WORKDIR) --overwrite

# ruff (configured in pyproject.toml): lint and check the format of everything we wrote.
lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: install
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

# Test files run in parallel, one worker per core (TEST_WORKERS=0 runs them in this process).
TEST_WORKERS ?= auto
test: install
	$(PY) -m pytest -q -p no:cacheprovider -n $(TEST_WORKERS) --dist loadfile

# experiments/ is a package of scripts run as modules from the repository root (make's cwd).
bench: install
	$(PY) -m pip install -q -e '.[test,bench]'
	$(PY) -m experiments.bench.bench

experiments: install
	$(PY) -m experiments.chapter.run_all

experiments-quick: install
	$(PY) -m experiments.chapter.run_all --quick

clean:
	rm -rf runs experiments/*/out .pytest_cache .xla-cache
