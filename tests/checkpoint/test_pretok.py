"""GGUF pre-tokenizer names (``tokenizer.ggml.pre``): each llama.cpp type builds its pipeline, names are
chosen on export from what the tokenizer does, and a name or a split llama.cpp cannot express is refused
(WS120). Compared with llama.cpp itself in tests/checkpoint/test_llama_cpp.py."""

from __future__ import annotations

import inspect
import json
import textwrap

import pytest
from _gguf_tools import write_tiny_gguf
from _hostile import refused_cli
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

from warmstart.arch import CausalLM, get_preset
from warmstart.checkpoint import load_checkpoint
from warmstart.checkpoint.gguf.parse import GGUFFile
from warmstart.checkpoint.gguf.pretok import (
    BY_NAME,
    LLAMA3,
    PRE_TOKENIZERS,
    QWEN2,
    build_pre_tokenizer,
    llama_cpp_pre_name,
)
from warmstart.errors import PreTokenizerError

PROBE = "def f(x):\n    return 1234567 + x  # ½ é 中文 I'm 😀\r\n\n   end  "


def _pieces(pre) -> list[str]:
    return [p for p, _ in build_pre_tokenizer(pre).pre_tokenize_str(PROBE)]


def _trained(pre_tokenizer, *, ignore_merges: bool = False, normalizer=None) -> Tokenizer:
    """A byte-level BPE learned on the stdlib's textwrap with this pre-tokenizer."""
    tok = Tokenizer(models.BPE(ignore_merges=ignore_merges))
    tok.pre_tokenizer = pre_tokenizer
    tok.decoder = decoders.ByteLevel()
    if normalizer is not None:
        tok.normalizer = normalizer
    tok.train_from_iterator([inspect.getsource(textwrap)], trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False))
    return tok


def _split(regex: str):
    return pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(regex), behavior="isolated"),
                                    pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])


def test_every_type_builds_and_no_two_behave_alike():
    shapes = [(p.splits, p.ignore_merges) for p in PRE_TOKENIZERS]
    assert len(set(shapes)) == len(shapes)
    assert len(BY_NAME) == sum(len(p.names) for p in PRE_TOKENIZERS)  # no name in two types
    for pre in PRE_TOKENIZERS:  # the pieces cover the text, nothing lost or added
        pieces = _pieces(pre)
        assert decoders.ByteLevel().decode(pieces) == PROBE and len(pieces) > 3, pre.name


def test_smollm_splits_digits_and_gpt2_does_not():
    assert "Ġ1234567" in _pieces(BY_NAME["gpt-2"])
    assert [p for p in _pieces(BY_NAME["smollm"]) if p.isdigit()] == list("1234567")
    assert "123" in _pieces(BY_NAME["llama-bpe"]) and "4" in _pieces(BY_NAME["qwen2"])


@pytest.mark.parametrize("pre_tok, ignore, expected", [
    (pre_tokenizers.ByteLevel(add_prefix_space=False), False, "gpt-2"),  # warmstart's scratch BPE, GPT-2
    (pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                              pre_tokenizers.ByteLevel(add_prefix_space=False)]), False, "smollm"),  # SmolLM2
    (_split(LLAMA3), True, "llama-bpe"),  # Llama 3
    (_split(LLAMA3), False, "dbrx"),
    (_split(QWEN2), False, "qwen2"),  # Qwen2 / Qwen2.5
    (_split(QWEN2.replace("(?i:'s|'t|'re|'ve|'m|'ll|'d)", "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])")),
     False, "qwen2"),  # llama.cpp's own spelling of the contractions
])
def test_export_name_follows_what_the_tokenizer_does(pre_tok, ignore, expected):
    assert llama_cpp_pre_name(_trained(pre_tok, ignore_merges=ignore)) == expected


def test_the_source_name_is_kept_when_it_behaves_the_same():
    smollm = _trained(pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                               pre_tokenizers.ByteLevel(add_prefix_space=False)]))
    assert llama_cpp_pre_name(smollm, "starcoder") == "starcoder"
    assert llama_cpp_pre_name(smollm, "gpt-2") == "smollm"  # a name that splits otherwise is not kept
    gpt2 = _trained(pre_tokenizers.ByteLevel(add_prefix_space=False), normalizer=normalizers.NFC())
    assert llama_cpp_pre_name(gpt2, "mpt") == "mpt"  # GPT-NeoX / MPT: NFC, as llama.cpp's converter reads it


@pytest.mark.parametrize("pre_tok, normalizer", [
    (pre_tokenizers.Sequence([pre_tokenizers.Whitespace(), pre_tokenizers.ByteLevel(use_regex=False)]), None),
    (pre_tokenizers.ByteLevel(add_prefix_space=True), None),
    (pre_tokenizers.ByteLevel(add_prefix_space=False), normalizers.Lowercase()),
    (_split(r"\p{N}{1,5}"), None),
])
def test_a_split_llama_cpp_cannot_express_is_refused(pre_tok, normalizer):
    with pytest.raises(PreTokenizerError, match="no llama.cpp pre-tokenizer type reproduces") as err:
        llama_cpp_pre_name(_trained(pre_tok, normalizer=normalizer))
    assert err.value.code == "WS120" and err.value.exit_code == 2


def _gguf(tmp_path, tok, pre: str):
    cfg = get_preset("llama-tiny").replace(vocab_size=512, bos_token_id=0, eos_token_id=0)
    model = CausalLM(cfg)
    model.reset_parameters(seed=0)
    path = tmp_path / f"{pre or 'none'}.gguf"
    write_tiny_gguf(path, model, tok, pre=pre)
    return path


def test_every_type_reads_back_under_its_own_name(tmp_path, tiny_tokenizer):
    """GGUF with name N -> tokenizer -> the name export writes is N (or, for a shared type, its own name)."""
    for name in BY_NAME:
        g = GGUFFile(_gguf(tmp_path, tiny_tokenizer, name))
        from warmstart.checkpoint.gguf.tokenizer import gguf_tokenizer

        tok = gguf_tokenizer(g)
        assert llama_cpp_pre_name(tok, name) == name
        assert llama_cpp_pre_name(tok) == BY_NAME[name].name
        g.close()


def test_reading_an_unknown_name_is_refused(tmp_path, tiny_tokenizer):
    ckpt = load_checkpoint(_gguf(tmp_path, tiny_tokenizer, "gpt2"))  # not llama.cpp's spelling ("gpt-2")
    with pytest.raises(PreTokenizerError, match="'gpt2'"):
        ckpt.tokenizer
    raw = load_checkpoint(_gguf(tmp_path, tiny_tokenizer, "gemma4"))
    with pytest.raises(PreTokenizerError, match="raw UTF-8"):
        raw.tokenizer


def test_export_of_a_tokenizer_llama_cpp_cannot_split_writes_nothing(tmp_path, tiny_hf_dir):
    """`export --to gguf` of a checkpoint whose tokenizer.json splits at whitespace: WS120, no file."""
    import shutil

    src = tmp_path / "src"
    shutil.copytree(tiny_hf_dir, src)
    tj = json.loads((src / "tokenizer.json").read_text())
    tj["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [
        {"type": "WhitespaceSplit"}, {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
                                      "use_regex": False}]}
    (src / "tokenizer.json").write_text(json.dumps(tj))
    work = tmp_path / "out"
    work.mkdir()
    refused_cli(work, ["export", src, "--to", "gguf", "-o", work / "m.gguf"], "WS120", 2,
                says="no llama.cpp pre-tokenizer type")
    assert not any(work.iterdir())
