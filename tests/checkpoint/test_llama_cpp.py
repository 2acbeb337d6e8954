"""warmstart's GGUF tokenizers against llama.cpp itself (marker ``llamacpp``; ``make llama-cpp`` builds it):
llama.cpp's own vocabularies and test vectors, every pre-tokenizer name llama.cpp knows, and a mixed probe
(code, digits, whitespace runs, unicode, a leading space, special tokens) for each tokenizer kind."""

from __future__ import annotations

import inspect
import json
import re
import tarfile
import textwrap

import pytest
from _gguf_tools import spm_vocab, write_tiny_gguf
from _llama_cpp import VOCAB_DIR, llama_cpp, load, sdist, tokenize, vocab_vectors

from warmstart.arch import CausalLM, get_preset
from warmstart.checkpoint import load_checkpoint
from warmstart.checkpoint.gguf.parse import GGUFFile
from warmstart.checkpoint.gguf.pretok import BY_NAME, RAW_UTF8_NAMES
from warmstart.checkpoint.gguf.tokenizer import gguf_tokenizer
from warmstart.errors import UnreadableError

pytestmark = pytest.mark.llamacpp

PROBE = [
    "def f(x):\n    return x**2  # é 中文\n",
    " leading space",
    "  two leading spaces, and trailing  ",
    "1234567 and 12,345.678 ½ ٣٤",
    "   many   spaces\n\n\n\ttabs\r\n  ",
    "I'm HELLO's naïve 日本語もある。한국어 😀🚀 x\u200dy",
    "",
]
# The types whose regex tells upper from lower case: llama.cpp's std::regex fallback folds every non-ASCII
# letter into one class (unicode.cpp, "collapsed" text), so "Ü" there starts no new word; warmstart runs
# the model's own regex. The one difference, pinned below.
CASED = ("gpt-4o", "llama4", "kanana2", "talkie", "minimax-m2", "tekken", "tiny_aya", "cohere2moe", "kimi-k2",
         "youtu")
CASE_PROBE = "ÄpfelÜber"


def test_every_pre_tokenizer_name_llama_cpp_knows_is_mapped():
    """The names ``llama_vocab::load`` accepts for a byte-level vocabulary, read from the llama.cpp source
    this build was made from: warmstart maps each one (or names why not: raw UTF-8 BPE)."""
    with tarfile.open(sdist()) as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith("vendor/llama.cpp/src/llama-vocab.cpp"))
        source = tar.extractfile(member).read().decode("utf-8")
    names = set(re.findall(r'tokenizer_pre == "([^"]+)"', source))
    assert len(names) > 80
    assert names - set(RAW_UTF8_NAMES) == set(BY_NAME)


def _vocabs():
    return sorted(VOCAB_DIR.glob("ggml-vocab-*.gguf")) if VOCAB_DIR.is_dir() else []


@pytest.mark.parametrize("gguf", _vocabs(), ids=lambda p: p.name[len("ggml-vocab-"):-len(".gguf")])
def test_llama_cpp_vocab_vectors(gguf):
    """Every vector of every vocabulary warmstart reads gives llama.cpp's expected ids (and llama.cpp gives
    them too); a vocabulary of a kind warmstart does not build is refused by name."""
    llama_cpp()
    g = GGUFFile(gguf)
    try:
        ours = gguf_tokenizer(g)
    except UnreadableError as err:
        assert g.metadata["tokenizer.ggml.model"] in ("bert", "t5"), err
        pytest.skip(f"warmstart does not build a '{g.metadata['tokenizer.ggml.model']}' tokenizer ({err.code})")
    finally:
        g.close()
    if not (gguf.parent / (gguf.name + ".inp")).exists():
        pytest.skip("llama.cpp ships no test vectors for this vocabulary")
    llm = load(gguf, vocab_only=True)
    vectors = vocab_vectors(gguf)
    ours_wrong = [t for t, ids in vectors.items() if ours.encode(t, add_special_tokens=False).ids != ids]
    theirs_wrong = [t for t, ids in vectors.items() if llm.tokenize(t.encode(), add_bos=False, special=False) != ids]
    assert not ours_wrong, (len(ours_wrong), len(vectors), ours_wrong[:3])
    assert not theirs_wrong, theirs_wrong[:3]
    print(f"{gguf.name}: {len(vectors)}/{len(vectors)} vectors equal")


@pytest.fixture(scope="module")
def byte_level_gguf(tmp_path_factory):
    """name -> a tiny GGUF whose byte-level BPE was learned without any split (its merges cross letters,
    digits, spaces and punctuation, so every place a pre-tokenizer cuts shows in the ids)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    texts = [inspect.getsource(textwrap), inspect.getsource(json)] + (PROBE + [CASE_PROBE]) * 5
    tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=4000, special_tokens=["<|endoftext|>"], max_token_length=48,
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                                       show_progress=False))
    cfg = get_preset("llama-tiny").replace(vocab_size=tok.get_vocab_size(), bos_token_id=0, eos_token_id=0)
    model = CausalLM(cfg)
    model.reset_parameters(seed=0)
    root = tmp_path_factory.mktemp("pre")

    def make(name: str):
        path = root / f"{name}.gguf"
        if not path.exists():
            write_tiny_gguf(path, model, tok, pre=name)
        return path

    return make


@pytest.mark.parametrize("name", sorted(BY_NAME))
def test_every_pre_tokenizer_name_tokenizes_as_llama_cpp(byte_level_gguf, name):
    llama_cpp()
    path = byte_level_gguf(name)
    ours, llm = load_checkpoint(path).tokenizer, load(path, vocab_only=True)
    for text in PROBE + ["<|endoftext|>x" + PROBE[0]]:
        assert ours.encode(text, add_special_tokens=False).ids == tokenize(llm, text), (name, text)
    same = ours.encode(CASE_PROBE, add_special_tokens=False).ids == tokenize(llm, CASE_PROBE)
    assert same == (name not in CASED), name


TEXTS = [inspect.getsource(textwrap), "The quick brown fox jumps over the lazy dog. " * 4]
SPM_PROBE = PROBE + ["<s> a </s> b <unk> x <start_of_turn>user\nHi<end_of_turn>\n", "Café — déjà vu ∑∫√"]


@pytest.mark.parametrize("spelling, arch, flags", [
    ("llama", None, {}), ("llama", None, {"add_space_prefix": False}), ("llama", None, {"add_bos": False}),
    ("llama", "phi3", {}), ("gemma", None, {"add_bos": True, "add_space_prefix": False}),
], ids=["llama", "llama-no-prefix", "llama-no-bos", "phi3", "gemma"])
def test_sentencepiece_probe_tokenizes_as_llama_cpp(tmp_path, spelling, arch, flags):
    llama_cpp()
    vocab = spm_vocab(TEXTS, gemma=spelling == "gemma", scrambled=False)  # llama.cpp ranks Gemma's merges by score
    preset = "gemma3-tiny" if spelling == "gemma" else "llama-tiny"
    cfg = get_preset(preset).replace(bos_token_id=vocab.specials["bos"], eos_token_id=vocab.specials["eos"],
                                     pad_token_id=vocab.specials.get("pad"))
    model = CausalLM(cfg)
    model.reset_parameters(seed=0)
    path = tmp_path / "t.gguf"
    write_tiny_gguf(path, model, spm=vocab, spm_flags=flags, arch=arch)
    ours, llm = load_checkpoint(path).tokenizer, load(path, vocab_only=True)
    for text in SPM_PROBE:
        assert ours.encode(text, add_special_tokens=False).ids == tokenize(llm, text), text
        with_bos = llm.tokenize(text.encode(), add_bos=True, special=True)
        assert ours.encode(text).ids == with_bos, text  # BOS/EOS as the file says, as llama.cpp adds them


REAL = {"smollm2-135m-instruct": pytest.mark.smollm2, "qwen2.5-coder-0.5b-instruct": pytest.mark.qwen25coder,
        "gemma3-270m": pytest.mark.gemma3}


@pytest.mark.parametrize("alias", [pytest.param(a, marks=m) for a, m in REAL.items()])
def test_real_gguf_tokenizers_tokenize_as_llama_cpp(alias):
    """The real SmolLM2 ("smollm": digits one by one), Qwen2.5-Coder ("qwen2") and Gemma 3 (SentencePiece,
    runs of spaces matched whole) GGUFs: the probe and two stdlib modules give llama.cpp's ids."""
    from warmstart.checkpoint.aliases import resolve_checkpoint_path

    llama_cpp()
    try:
        path = resolve_checkpoint_path(alias)
    except UnreadableError as err:
        pytest.skip(f"{alias} is not installed ({err.code}): make real-weights")
    ours, llm = load_checkpoint(path).tokenizer, load(path, vocab_only=True)
    specials = "<start_of_turn>user\nHi<end_of_turn>\n<|im_start|>x<|endoftext|>"
    for text in PROBE + [specials, "x" + " " * 45 + "y\n\n\n\n", inspect.getsource(textwrap), inspect.getsource(json)]:
        assert ours.encode(text, add_special_tokens=False).ids == tokenize(llm, text), (alias, text[:40])
