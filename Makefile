# Two commands do all set-up on a fresh machine:
#   make demo   — create .venv, install, train a VAE and a sigmoid belief net on the embedded MNIST digits
#   make test   — create .venv, install, run the default test suite
VENV ?= .venv
PYTHON ?= python3
BIN = $(VENV)/bin
FASHION_MNIST = /usr/share/datasets/fashion-mnist

.PHONY: setup lint demo test test-slow test-gpu gpu-benchmark benchmark docs

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e ".[data,test]"
	@[ -d $(FASHION_MNIST) ] || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
		apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1; } || \
		echo "note: Debian's dataset-fashion-mnist is not installed; Fashion-MNIST tests will skip"
	touch $@

demo: setup
	$(BIN)/pplgen fit vae --engine svi --data mnist --epochs 20 --out runs/vae-svi
	$(BIN)/pplgen fit vae --engine iwae --particles 5 --estimator dreg --data mnist --epochs 20 --out runs/vae-iwae
	$(BIN)/pplgen fit sbn --engine vimco --particles 5 --layers 200 --data mnist --epochs 50 --eval-every 10 --out runs/sbn-vimco

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: lint
	$(BIN)/python -m pytest -q

test-slow: setup
	$(BIN)/python -m pytest -q -m slow

test-gpu: setup
	$(BIN)/python -m pytest -q -m gpu

gpu-benchmark: setup
	bash benchmarks/gpu.sh

benchmark: setup
	$(BIN)/python benchmarks/vae_step.py
	$(BIN)/python benchmarks/vae_loglik.py

# The documentation site, offline: every example runs on its --smoke budget, and a warning fails the build.
docs: setup
	@$(BIN)/python -c "import sphinx, sphinx_gallery, furo, myst_parser" 2>/dev/null || $(BIN)/python -m pip install -q -e ".[docs]"
	$(BIN)/sphinx-build -W --keep-going -b html docs docs/_build/html
