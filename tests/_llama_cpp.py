"""llama.cpp for the tests marked ``llamacpp``: llama-cpp-python built by ``make llama-cpp`` into
.devpkgs/llama-cpp (with llama.cpp's ``ggml-vocab-*`` files beside it, and the sdist it was built from);
each test skips, saying so, where it is not built."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LLAMA_CPP_DIR = ROOT / ".devpkgs" / "llama-cpp"
VOCAB_DIR = LLAMA_CPP_DIR / "vocab"
NOT_BUILT = "llama.cpp is not built here: run `make llama-cpp` (builds llama-cpp-python into .devpkgs/llama-cpp)"


def llama_cpp():
    """The ``llama_cpp`` module of the build, or a skip."""
    if not (LLAMA_CPP_DIR / ".installed").exists():
        pytest.skip(NOT_BUILT)
    if str(LLAMA_CPP_DIR) not in sys.path:
        sys.path.insert(0, str(LLAMA_CPP_DIR))
    import llama_cpp as module

    return module


def sdist() -> Path:
    found = sorted(LLAMA_CPP_DIR.parent.glob("llama_cpp_python-*.tar.gz"))
    if not found:
        pytest.skip(NOT_BUILT)
    return found[-1]


def load(path: Path, *, vocab_only: bool = False, n_ctx: int = 256):
    """A llama.cpp model (CPU, logits of every position kept); loading errors raise as llama.cpp raises them."""
    return llama_cpp().Llama(str(path), vocab_only=vocab_only, n_ctx=n_ctx, n_threads=2, logits_all=not vocab_only,
                             verbose=False, seed=0)


def tokenize(llm, text: str) -> list[int]:
    """llama.cpp's ids for ``text``: no BOS/EOS added, special tokens in the text matched (as tokenizers does)."""
    return llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)


def vocab_vectors(gguf: Path) -> dict[str, list[int]]:
    """llama.cpp's test vectors of a ``ggml-vocab-*.gguf`` (``tests/test-tokenizer-0.cpp``'s reading: inputs
    separated by ``\\n__ggml_vocab_test__\\n``, one line of ids each, a repeated input counted once)."""
    raw = Path(str(gguf) + ".inp").read_bytes().decode("utf-8")
    inputs, pos, sep = [], 0, "\n__ggml_vocab_test__\n"
    while pos < len(raw):
        nxt = raw.find(sep, pos)
        inputs.append(raw[pos:] if nxt < 0 else raw[pos:nxt])
        if nxt < 0:
            break
        pos = nxt + len(sep)
    lines = Path(str(gguf) + ".out").read_bytes().decode("utf-8").split("\n")
    assert len(lines) >= len(inputs)
    return {text: [int(t) for t in line.split()] for text, line in zip(inputs, lines)}
