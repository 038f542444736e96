# Every target creates .venv and installs the project into it when needed (pyproject.toml changed).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
SOURCES := iris_wm tokenizer sequence_model scaling tests benchmarks
# OpenMP's wait policy is left to the user: on a quiet machine the default (spin, then sleep) decodes 4x
# faster than OMP_WAIT_POLICY=passive (docs/LOG.md); on a busy one passive avoids spinning threads.

.PHONY: venv browser mujoco-gl demo-control test test-slow lint format demo demo-seeds bench bench-import bench-planning bench-memory synthetic-utility compare-prediction scaling clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip 2>&1 | grep -v "^WARNING: Location" || true
	$(PY) -m pip install --quiet -e '.[dev]' 2>&1 | grep -v "^WARNING: Location" || true
	$(PY) -c "import iris_wm, tokenizer, torch, lightning, ale_py" && touch $(STAMP)

# The browser test of `iris-wm play` drives Debian's Chromium; installed once where this runs as root (the test
# skips, saying why, where it cannot be installed).
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null 2>&1 || \
		echo "Chromium is not installed (not root, or no package source): the browser test will skip."; }

# MuJoCo (the dmc suite) renders headless through EGL: Mesa's, installed once where this runs as root (the dmc tests
# skip, saying why, where it cannot be).
mujoco-gl:
	@ldconfig -p 2>/dev/null | grep -q libEGL_mesa || { [ "$$(id -u)" = 0 ] && \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libegl1 libegl-mesa0 libgl1) >/dev/null 2>&1 || \
		echo "Mesa's EGL is not installed (not root, or no package source): the dmc suite's tests will skip."; }

test: $(STAMP) browser mujoco-gl  ## the test suite, one worker per core (pytest-xdist); 8.5 minutes on a 2-core AMX Xeon
	OMP_NUM_THREADS=1 $(PY) -m pytest -q -n auto

test-slow: $(STAMP)  ## the slow checks (planted law with many replicates); minutes
	OMP_NUM_THREADS=1 $(PY) -m pytest -q -m slow

lint: $(STAMP)  ## ruff's linter and its formatter (make format applies the formatting)
	$(PY) -m ruff check $(SOURCES)
	$(PY) -m ruff format --check $(SOURCES)

format: $(STAMP)
	$(PY) -m ruff format $(SOURCES)

SEED ?= 0
DEMO_OUT := $(if $(filter 0,$(SEED)),runs/demo,runs/demo-seed$(SEED))

demo: $(STAMP)  ## the pipeline end to end on Breakout -> runs/demo/report.md (make demo SEED=n: runs/demo-seed<n>)
	OMP_NUM_THREADS=2 $(PY) -m iris_wm.cli.demo --out $(DEMO_OUT) --seed $(SEED)

CONTROL_TASK ?= reacher-easy
CONTROL_OUT := $(if $(filter reacher-easy,$(CONTROL_TASK)),runs/demo-control,runs/demo-control-$(CONTROL_TASK))

demo-control: $(STAMP) mujoco-gl  ## the pipeline on dm_control reacher-easy (MuJoCo) -> runs/demo-control/report.md (CONTROL_TASK=cartpole-swingup: runs/demo-control-cartpole-swingup)
	OMP_NUM_THREADS=2 $(PY) -m iris_wm.cli.control_demo --out $(CONTROL_OUT) --task $(CONTROL_TASK)

demo-seeds: $(STAMP)  ## after make demo: the agent stage over 3 seeds against random -> runs/demo/seeds.json
	OMP_NUM_THREADS=2 $(PY) -m iris_wm.cli.seeds --out $(DEMO_OUT) --seeds 0 1 2

bench: $(STAMP)  ## throughput benchmarks -> docs/benchmarks.json and docs/BENCHMARKS.md
	OMP_NUM_THREADS=2 $(PY) benchmarks/run.py --json docs/benchmarks.json --markdown docs/BENCHMARKS.md

synthetic-utility: $(STAMP)  ## after make demo: export fidelity and the agent trained on 0/50/80% synthetic data
	OMP_NUM_THREADS=2 $(PY) benchmarks/synthetic_utility.py --demo runs/demo --json docs/synthetic_utility.json

compare-prediction: $(STAMP)  ## after make demo: parallel vs autoregressive prediction -> docs/prediction_quality.md
	OMP_NUM_THREADS=2 $(PY) benchmarks/prediction_quality.py --demo runs/demo --json docs/prediction_quality.json

bench-import: $(STAMP)  ## import throughput of LeRobot datasets with AV1 / H.264 video -> docs/import_throughput.json
	OMP_NUM_THREADS=2 $(PY) benchmarks/import_throughput.py --json docs/import_throughput.json

bench-planning: $(STAMP)  ## ms per planning decision, demo and IRIS-size world models, N = 64/256/512 -> docs/PLANNING.md
	OMP_NUM_THREADS=2 $(PY) benchmarks/planning.py --json docs/planning.json --markdown docs/PLANNING.md

bench-memory: $(STAMP)  ## peak memory of sampling from a 1M-frame store (12 GB on disk) -> docs/store_memory.json
	$(PY) benchmarks/store_memory.py --json docs/store_memory.json

scaling: $(STAMP)  ## collect and encode Breakout, sweep, fit, report -> runs/scaling/cpu_default/report.md (SEED=n: an independent repeat)
	OMP_NUM_THREADS=2 $(PY) -m iris_wm.cli scaling run --spec configs/scaling/cpu_default.yaml --workers 2 --seed $(SEED)

clean:
	rm -rf runs lightning_logs .pytest_cache
