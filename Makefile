# Every target creates .venv and installs the project into it when needed (pyproject.toml changed).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
# OpenMP's wait policy is left to the user: on a quiet machine the default (spin, then sleep) decodes 4x
# faster than OMP_WAIT_POLICY=passive (docs/LOG.md); on a busy one passive avoids spinning threads.

.PHONY: venv test lint demo bench scaling clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip 2>&1 | grep -v "^WARNING: Location" || true
	$(PY) -m pip install --quiet -e '.[dev]' 2>&1 | grep -v "^WARNING: Location" || true
	$(PY) -c "import iris_wm, tokenizer, torch, lightning, ale_py" && touch $(STAMP)

test: $(STAMP)  ## the test suite (fast; a few minutes on 2 cores)
	OMP_NUM_THREADS=1 $(PY) -m pytest -q

lint: $(STAMP)
	$(PY) -m ruff check iris_wm tokenizer sequence_model scaling tests benchmarks

demo: $(STAMP)  ## collect Breakout, train the demo tokenizer, write runs/demo/report.md
	OMP_NUM_THREADS=2 $(PY) -m iris_wm.demo --out runs/demo

bench: $(STAMP)  ## throughput benchmarks -> docs/benchmarks.json and docs/BENCHMARKS.md
	OMP_NUM_THREADS=2 $(PY) benchmarks/run.py --json docs/benchmarks.json --markdown docs/BENCHMARKS.md

scaling: $(STAMP)
	@echo "The scaling harness is not built yet (issue 5)." && exit 1

clean:
	rm -rf runs lightning_logs .pytest_cache
