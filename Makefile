# spikeforge: `make demo` sets everything up and runs the demo; `make test` runs the tests.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
TORCH_VERSION ?= 2.13.0

.PHONY: setup demo test lint bench bench-peers clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	@# Install a CPU build of torch first when none is importable (a bare `torch`
	@# requirement could otherwise pull a multi-GB CUDA build).
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install --quiet torch==$(TORCH_VERSION)
	$(PY) -m pip install --quiet -e ".[test,interop]"
	$(PY) -m pip install --quiet --no-deps norse==1.1.0 neurobench==2.3.0
	touch $@

setup: $(VENV)/.installed

demo: setup
	$(VENV)/bin/spikeforge demo

test: setup
	$(PY) -m ruff check src tests bench
	$(PY) -m pytest -q -ra

bench: setup
	$(PY) bench/yinyang.py --seeds 5 --json bench/results/yinyang.json
	$(PY) bench/mnist.py --json bench/results/mnist.json

# The peer libraries of bench/peers.py (versions tested), then the CPU comparison at two sizes. Packages whose
# declared dependencies would replace torch go in with --no-deps, with the small pure-Python ones they import.
PEERS_NO_DEPS := norse==1.1.0 spikingjelly==2.0.0 sinabs==3.1.3 nirtorch==2.6 pbr==7.1.3 loguru==0.7.3

bench-peers: setup
	$(PY) -m pip install --quiet -e ".[bench]"
	$(PY) -m pip install --quiet --no-deps $(PEERS_NO_DEPS)
	$(PY) bench/peers.py --size medium --device cpu --rounds 3 --json bench/results/peers-cpu-medium.json
	$(PY) bench/peers.py --size long --device cpu --rounds 3 --json bench/results/peers-cpu-long.json

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
