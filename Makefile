# Set-up is automatic: `make test` and `make demo` create .venv when missing and
# reinstall only when pyproject.toml changed.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.install-stamp

.PHONY: test test-long test-extra demo study lint format bench

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

# two pytest workers (pytest-xdist), each running whole test files, one torch thread each
# (tests/conftest.py); PYTEST_WORKERS=0 runs the tests in this process
PYTEST_WORKERS ?= 2
XDIST = $(if $(filter 0,$(PYTEST_WORKERS)),,-n $(PYTEST_WORKERS) --dist loadfile)

test: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m pytest -q -m "not long and not extra" --durations=25 $(XDIST)

# the slow end-to-end reliability tests (marked `long`): same-seed runs, SIGKILL and resume,
# memory over 1,000 steps
test-long: $(STAMP)
	$(PY) -m pytest -q -m long $(XDIST)

# re-checks that CI leaves out (about 3 minutes): the learning thresholds over 5 seeds and
# every experiment config (same data as its base config) stepped on its own files
test-extra: $(STAMP)
	$(PY) -m pytest -q -m extra

# the exact special cases, then the demo grid (attention and ConvNN-attention x 5 seeds, 12
# epochs, each converged); `--report` prints runs/ablations/quickstart/results.md: mean ± std,
# 95% intervals, paired differences, converged seeds (recorded in docs/results/demo.json)
demo: $(STAMP)
	$(PY) -m convnn.tools.demo
	$(VENV)/bin/convnn-ablate run ablations/grids/quickstart.yaml --out runs/ablations/quickstart --parallel 2 --report

# the spectrum study (docs/results.md): three tasks (local texture, long-range markers, digits)
# x the layers from convolution to attention x 5 seeds, about an hour on 2 idle cores; each
# grid's results are recorded in docs/results/spectrum_<task>.json
STUDY := texture markers digits
study: $(STAMP)
	for task in $(STUDY); do \
	  start=$$(date +%s); \
	  $(VENV)/bin/convnn-ablate run ablations/grids/spectrum_$$task.yaml \
	    --out runs/ablations/spectrum_$$task --parallel 2 --report || exit 1; \
	  $(PY) -m ablations.record runs/ablations/spectrum_$$task \
	    ablations/grids/spectrum_$$task.yaml docs/results/spectrum_$$task.json \
	    --wall-time $$(( $$(date +%s) - start )) || exit 1; \
	done

format: $(STAMP)
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

bench: $(STAMP)
	$(PY) benchmarks/bench_convnn.py

# the wheels benchmarks/gpu_check.sh installs on a bare GPU machine (docs/gpu.md): the pure-Python
# packages of benchmarks/wheels/requirements.txt for CPython 3.12 / manylinux x86_64, then the size
GPU_WHEELS := benchmarks/wheels
.PHONY: gpu-wheels
gpu-wheels: $(STAMP)
	rm -f $(GPU_WHEELS)/*.whl
	$(PY) -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: \
		--python-version 3.12 --implementation cp --platform manylinux2014_x86_64 \
		-d $(GPU_WHEELS) -r $(GPU_WHEELS)/requirements.txt
	@! ls $(GPU_WHEELS)/*.whl | grep -v -- '-none-any\.whl$$' || \
		{ echo "gpu-wheels: only pure-Python wheels belong here"; exit 1; }
	@ls -1 $(GPU_WHEELS)/*.whl
	@echo "$$(du -sk $(GPU_WHEELS) | cut -f1) KiB in $(GPU_WHEELS) (committed: it travels with the checkout)"
