"""SentencePiece GGUF tokenizers (tokenizer.ggml.model = "llama") on tiny files written by the tests: the
tokenizer warmstart builds equals transformers' own GGUF conversion (ids; for Gemma and Phi-3 the whole
tokenizer.json) in the Llama, Gemma and Phi-3 spellings with the BOS/EOS flags the file declares, but for
one difference: a Llama-spelled text that starts with a space keeps the "▁" llama.cpp and SentencePiece
put before it, which transformers' conversion drops (llama.cpp's own vectors: tests/checkpoint/
test_llama_cpp.py). ``export --to gguf`` writes it back so that both read the same ids again."""

from __future__ import annotations

import inspect
import json
import textwrap

import pytest
import torch
from _gguf_tools import add_spm_tokenizer, spm_vocab, write_tiny_gguf

from warmstart.arch import CausalLM, get_preset
from warmstart.checkpoint import load_checkpoint
from warmstart.checkpoint.gguf.parse import GGUFFile
from warmstart.checkpoint.gguf.tokenizer import merges_from_scores
from warmstart.errors import UnreadableError

transformers = pytest.importorskip("transformers")

TEXTS = [inspect.getsource(textwrap), "The quick brown fox jumps over the lazy dog. " * 4]
PROBE = [
    "def f(x):\n    return x  # é 中文\n",
    "Hello world",
    " leading space, and trailing ",
    "Café au lait, naïve résumé — déjà vu.",
    "中文字符测试，日本語もある。한국어",
    "Emoji 🚀🔥👍🏽 and flags 🇫🇷; math ∑∫√ ≤ ≥",
    "<s> a </s> b <unk> <bos> x <eos> <start_of_turn>user\nHi<end_of_turn>\n<mask>",
    "   many   spaces\n\n\n\ttabs\r\n",
    "x",
    "",
]
# Without special tokens: llama.cpp puts the "▁" before each stretch of text after a special token too,
# transformers' conversion before the first only (compared with llama.cpp in test_llama_cpp.py).
PLAIN = [t for t in PROBE if "<s>" not in t]
# Without runs of spaces: llama.cpp matches Gemma's user-defined space runs whole before the merges,
# transformers' conversion leaves them to the merges (compared with llama.cpp in test_llama_cpp.py).
SINGLE_SPACED = [t for t in PROBE if "  " not in t]


@pytest.fixture(scope="module")
def vocabs():
    return {"llama": spm_vocab(TEXTS), "gemma": spm_vocab(TEXTS, gemma=True)}


def _write(tmp_path, vocab, preset="llama-tiny", arch=None, **flags):
    specials = vocab.specials
    cfg = get_preset(preset).replace(bos_token_id=specials["bos"], eos_token_id=specials["eos"],
                                     pad_token_id=specials.get("pad"))
    model = CausalLM(cfg).eval()
    model.reset_parameters(seed=0)
    write_tiny_gguf(tmp_path / "t.gguf", model, spm=vocab, spm_flags=flags, arch=arch)
    return tmp_path / "t.gguf"


def _both(path):
    ours = load_checkpoint(path).tokenizer
    theirs = transformers.AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    return ours, theirs


def _assert_equal(ours, theirs, texts=PROBE, *, prefix_space=False) -> None:
    """Equal ids and decoded text; with ``prefix_space`` (a Llama spelling that puts "▁" before the text)
    a text that starts with a space is, for transformers' conversion, one more space ahead."""
    for text in texts:
        ids = ours.encode(text).ids
        if prefix_space and text not in PLAIN:
            continue
        theirs_text = " " + text if prefix_space and text.startswith(" ") else text
        assert ids == theirs(theirs_text)["input_ids"], text
        assert ours.decode(ids, skip_special_tokens=False) == theirs.decode(ids), text


@pytest.mark.parametrize("flags", [{}, {"add_bos": False, "add_eos": True}, {"add_bos": True, "add_space_prefix": True},
                                   {"add_bos": True, "add_eos": True}])
def test_llama_spelling_equals_transformers(tmp_path, vocabs, flags):
    ours, theirs = _both(_write(tmp_path, vocabs["llama"], **flags))
    _assert_equal(ours, theirs, prefix_space=True)
    spaced = ours.encode(" x", add_special_tokens=False)  # llama.cpp: "▁" + "▁x", the space is not dropped
    assert "".join(spaced.tokens) == "\u2581\u2581x" and spaced.ids != ours.encode("x", add_special_tokens=False).ids
    first = ours.encode("Hello").ids
    assert (first[0] == 1) == flags.get("add_bos", True)  # a SentencePiece file that does not say adds BOS
    assert (first[-1] == 2) == flags.get("add_eos", False)
    assert any(ours.id_to_token(i).startswith("<0x") for i in ours.encode(PROBE[4]).ids)  # byte fallback


def test_gemma_spelling_equals_transformers(tmp_path, vocabs):
    ours, theirs = _both(_write(tmp_path, vocabs["gemma"], preset="gemma3-tiny", add_bos=True, add_eos=False,
                                add_space_prefix=False))
    assert type(theirs).__name__ == "GemmaTokenizer"
    _assert_equal(ours, theirs, SINGLE_SPACED)
    runs = ours.encode("a   b", add_special_tokens=False).tokens
    assert "\u2581\u2581\u2581" in runs  # the run of spaces stored as spaces is one token
    # ... matched whole before the merges, as llama.cpp matches user-defined tokens (transformers' conversion
    # leaves them to the merges): the one difference in the tokenizer.json
    ours_json, theirs_json = json.loads(ours.to_str()), json.loads(theirs.backend_tokenizer.to_str())
    runs = [a for a in ours_json["added_tokens"] if a["content"] in ("\u2581\u2581", "\u2581\u2581\u2581")]
    assert [a["normalized"] for a in runs] == [True, True]
    ours_json["added_tokens"] = [a for a in ours_json["added_tokens"] if a not in runs]
    assert ours_json == theirs_json


def test_phi3_spelling_equals_transformers(tmp_path, vocabs):
    ours, theirs = _both(_write(tmp_path, vocabs["llama"], arch="phi3"))
    _assert_equal(ours, theirs)
    assert json.loads(ours.to_str()) == json.loads(theirs.backend_tokenizer.to_str())


def test_merges_in_the_file_win_over_scores(tmp_path, vocabs):
    vocab = vocabs["llama"]
    implied = merges_from_scores({t: i for i, t in enumerate(vocab.tokens)}, dict(zip(vocab.tokens, vocab.scores)))
    kept = [f"{a} {b}" for a, b in implied if len(a + b) <= 3]  # only short merges: longer pieces never form
    ours, theirs = _both(_write(tmp_path, vocab, merges=kept))
    _assert_equal(ours, theirs, prefix_space=True)
    pieces = [t for t in ours.encode(TEXTS[0][:2000], add_special_tokens=False).tokens if not t.startswith("<0x")]
    assert max(map(len, pieces)) == 3


def test_add_space_prefix_false_is_honoured(tmp_path, vocabs):
    """llama.cpp reads ``add_space_prefix = false`` as: no "▁" before the text. (transformers' conversion
    ignores the flag; text that starts with a space is tokenized the same either way.)"""
    ours, theirs = _both(_write(tmp_path, vocabs["llama"], add_space_prefix=False))
    assert not ours.encode("Hello", add_special_tokens=False).tokens[0].startswith("\u2581")
    assert theirs.tokenize("Hello")[0].startswith("\u2581")
    for text in PROBE:
        assert ours.decode(ours.encode(text, add_special_tokens=False).ids, skip_special_tokens=False) == text
        if text.startswith(" "):
            assert ours.encode(text).ids == theirs(text)["input_ids"]


def test_no_merges_and_no_scores_is_unreadable(tmp_path, vocabs):
    from gguf import GGUFWriter

    vocab = vocabs["llama"]
    w = GGUFWriter(str(tmp_path / "bare.gguf"), "llama")
    add_spm_tokenizer(w, vocab)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    assert load_checkpoint(tmp_path / "bare.gguf").tokenizer is not None  # scores: fine
    g = GGUFFile(tmp_path / "bare.gguf")
    del g.metadata["tokenizer.ggml.scores"]
    from warmstart.checkpoint.gguf.tokenizer import gguf_tokenizer

    with pytest.raises(UnreadableError, match="neither merges nor token scores"):
        gguf_tokenizer(g)


@pytest.mark.parametrize("spelling, preset", [("llama", "llama-tiny"), ("gemma", "gemma3-tiny")])
def test_export_writes_sentencepiece_back(tmp_path, vocabs, spelling, preset):
    """GGUF -> export --to gguf -> the same ids through warmstart and through transformers; the file says
    "llama" with scores, merges, byte tokens, BOS and the prefix-space setting."""
    from warmstart.release.export import export_checkpoint

    flags = {"add_bos": True, "add_eos": False, "add_space_prefix": spelling == "llama"}
    src = _write(tmp_path, vocabs[spelling], preset=preset, **flags)
    source_tok = load_checkpoint(src).tokenizer
    (tmp_path / "out").mkdir()
    out = tmp_path / "out" / "e.gguf"
    report = export_checkpoint(src, "gguf", out, dtype="f32")
    assert report["verify"]["tokenizer_ids_equal"]
    md = GGUFFile(out).metadata
    assert md["tokenizer.ggml.model"] == "llama" and md["tokenizer.ggml.add_bos_token"] is True
    assert md["tokenizer.ggml.add_space_prefix"] is flags["add_space_prefix"]
    assert md["tokenizer.ggml.token_type"][md["tokenizer.ggml.tokens"].index("<0x41>")] == 6
    assert len(md["tokenizer.ggml.scores"]) == len(md["tokenizer.ggml.tokens"])
    ours, theirs = _both(out)
    _assert_equal(ours, theirs, SINGLE_SPACED if spelling == "gemma" else PROBE, prefix_space=flags["add_space_prefix"])
    for text in PROBE:
        assert ours.encode(text).ids == source_tok.encode(text).ids, text
    hf_dir = tmp_path / "hf"
    export_checkpoint(src, "hf", hf_dir)
    hf_tok = transformers.AutoTokenizer.from_pretrained(hf_dir)
    for text in PROBE:
        assert hf_tok(text)["input_ids"] == source_tok.encode(text).ids, text
    model = transformers.AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32).eval()
    assert type(model).__name__ == ("Gemma3ForCausalLM" if spelling == "gemma" else "LlamaForCausalLM")
