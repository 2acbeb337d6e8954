"""Hostile GGUF tokenizer metadata, byte-level BPE ("gpt2") and SentencePiece ("llama"): merges without a
space, with three parts, empty or naming tokens the vocabulary lacks; token types and scores of the wrong type
or length; a gigantic token; a SentencePiece vocabulary without its byte tokens; special ids that name no
token; vocabularies whose built tokenizer loses text. Each is refused (WS111 the declared value, WS104 the
tokenizer gate) by ``validate`` and by every command that builds the tokenizer, in seconds, never as WS999,
and nothing is left behind. ``inspect`` still shows such a file, naming the refusal.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest
from _hostile import cli, gguf_rewrite, refused_cli

U32, I32, STR, ARR, BOOL = 4, 5, 8, 9, 7
FAST = ("validate", "eval")
ALL = ("validate", "eval", "generate", "init", "export")


def command(name: str, ckpt: Path, tmp: Path, text: Path) -> list:
    return {
        "validate": ["validate", ckpt],
        "eval": ["eval", ckpt, "--data", text, "--max-tokens", 64, "--seq-len", 32],
        "generate": ["generate", ckpt, "--prompt", "def f(x):", "--max-new-tokens", 2],
        "init": ["pretrain", "--init", ckpt, "--data", text, "--max-steps", 1, "--seq-len", 16, "--batch-size", 1,
                 "--eval-tokens", 16, "--out", tmp / "out"],
        "export": ["export", ckpt, "--to", "gguf", "-o", tmp / "out.gguf"],
    }[name]


@pytest.fixture(scope="module")
def spm_base(tmp_path_factory):
    """A llama-tiny GGUF with a SentencePiece vocabulary (llama.cpp's "llama": scores, types, byte tokens)."""
    import inspect
    import textwrap

    from _gguf_tools import spm_vocab, write_tiny_gguf

    from warmstart.arch import CausalLM, get_preset

    vocab = spm_vocab([inspect.getsource(textwrap)])
    cfg = get_preset("llama-tiny").replace(bos_token_id=vocab.specials["bos"], eos_token_id=vocab.specials["eos"])
    model = CausalLM(cfg).eval()
    model.reset_parameters(seed=0)
    out = tmp_path_factory.mktemp("hostile-spm") / "spm.gguf"
    write_tiny_gguf(out, model, spm=vocab)
    return out


@pytest.fixture(scope="module")
def vocabularies(gguf_base, spm_base):
    """The tokenizer keys of both base files, as lists."""
    from warmstart.checkpoint.gguf.parse import GGUFFile

    return {kind: {k: v for k, v in GGUFFile(path).metadata.items() if k.startswith("tokenizer.")}
            for kind, path in (("bpe", gguf_base), ("spm", spm_base))}


@dataclass(frozen=True)
class Case:
    id: str
    base: str  # bpe | spm
    edit: Callable[[dict], dict]  # the base file's tokenizer keys -> {key: (GGUF type, value)} to set
    code: str
    commands: tuple[str, ...] = FAST
    drop: tuple[str, ...] = ()


def _set(key: str, vtype: int, value):
    return lambda md: {key: (vtype, value)}


def _merges(change):
    """The merges with ``change(list)`` applied (a copy)."""
    def edit(md):
        merges = list(md["tokenizer.ggml.merges"])
        change(merges)
        return {"tokenizer.ggml.merges": (ARR, merges)}
    return edit


def _first(value: str):
    return _merges(lambda m: m.__setitem__(0, value))


def _token(index: int, value: str, *, drop_last_merge: bool = False):
    """Token ``index`` replaced by ``value`` (a byte-level vocabulary's last token, made by the last merge, goes
    with that merge)."""
    def edit(md):
        tokens = list(md["tokenizer.ggml.tokens"])
        tokens[index] = value
        out = {"tokenizer.ggml.tokens": (ARR, tokens)}
        if drop_last_merge:
            out["tokenizer.ggml.merges"] = (ARR, list(md["tokenizer.ggml.merges"])[:-1])
        return out
    return edit


def _per_token(key: str, change):
    def edit(md):
        return {key: (ARR, change(list(md[key])))}
    return edit


def _tokens(change):
    return _per_token("tokenizer.ggml.tokens", change)


def _spm_merges(merges: list[str]):
    return lambda md: {"tokenizer.ggml.merges": (ARR, merges)}


def _without_bytes(keep: int):
    """A SentencePiece vocabulary whose byte tokens <0xNN> after the first ``keep`` are renamed."""
    def change(tokens):
        return [f"[X{i}]" if t.startswith("<0x") and int(t[3:5], 16) >= keep else t for i, t in enumerate(tokens)]
    return _tokens(change)


def _bpe_char_lost(md):
    """A byte-level vocabulary that lacks the spelling of one character the probe text uses (no merge needs it):
    the built tokenizer drops that character."""
    tokens = list(md["tokenizer.ggml.tokens"])
    used = {piece for m in md["tokenizer.ggml.merges"] for piece in m.split(" ")}
    index = next(i for i, t in enumerate(tokens) if t in "%&{}[]" and t not in used)
    tokens[index] = "[LOST]"
    return {"tokenizer.ggml.tokens": (ARR, tokens)}


def _more_tokens(md):
    tokens, types = md["tokenizer.ggml.tokens"], md["tokenizer.ggml.token_type"]
    return {"tokenizer.ggml.tokens": (ARR, tokens + [f"extra{i}" for i in range(8)]),
            "tokenizer.ggml.token_type": (ARR, types + [1] * 8)}


def _spm_only_pieces(md):
    """A SentencePiece vocabulary of which every piece is "a": no byte tokens, no <unk>, nothing to spell text."""
    return {"tokenizer.ggml.tokens": (ARR, ["a"] * len(md["tokenizer.ggml.tokens"]))}


CASES = [
    # byte-level BPE: merges
    Case("bpe-merge-without-space", "bpe", _first("ab"), "WS111", ALL),
    Case("bpe-merge-three-parts", "bpe", _first("a b c"), "WS111", ALL),
    Case("bpe-merge-empty-string", "bpe", _first(""), "WS111"),
    Case("bpe-merge-only-a-space", "bpe", _first(" "), "WS111"),
    Case("bpe-merge-trailing-space", "bpe", _first("a "), "WS111"),
    Case("bpe-merge-unknown-tokens", "bpe", _first("zzzq qqqz"), "WS111", ALL),
    Case("bpe-merge-result-not-a-token", "bpe", _first("\u0120 x"), "WS111"),
    Case("bpe-merges-empty", "bpe", _set("tokenizer.ggml.merges", ARR, []), "WS111", ALL),
    Case("bpe-merges-missing", "bpe", lambda md: {}, "WS111", drop=("tokenizer.ggml.merges",)),
    Case("bpe-merges-integers", "bpe", _set("tokenizer.ggml.merges", ARR, [1, 2, 3]), "WS111"),
    Case("bpe-merges-a-string", "bpe", _set("tokenizer.ggml.merges", STR, "a b"), "WS111"),
    # byte-level BPE: tokens and types
    Case("bpe-giant-token", "bpe", _token(511, "a" * 5_000_000, drop_last_merge=True), "WS111", ALL),
    Case("bpe-tokens-empty", "bpe", _set("tokenizer.ggml.tokens", ARR, []), "WS111"),
    Case("bpe-tokens-integers", "bpe", _set("tokenizer.ggml.tokens", ARR, list(range(512))), "WS111"),
    Case("bpe-tokens-all-the-same", "bpe", _tokens(lambda t: ["a"] * len(t)), "WS111"),
    Case("bpe-token-emptied", "bpe", _token(300, ""), "WS111"),
    Case("bpe-types-short", "bpe", _per_token("tokenizer.ggml.token_type", lambda t: t[:1]), "WS111", ALL),
    Case("bpe-types-long", "bpe", _per_token("tokenizer.ggml.token_type", lambda t: t + [1, 1]), "WS111"),
    Case("bpe-type-99", "bpe", _per_token("tokenizer.ggml.token_type", lambda t: [99] + t[1:]), "WS111"),
    Case("bpe-types-booleans", "bpe", _set("tokenizer.ggml.token_type", ARR, [True] * 512), "WS111"),
    Case("bpe-type-7", "bpe", _per_token("tokenizer.ggml.token_type", lambda t: t[:-1] + [7]), "WS111"),
    Case("bpe-types-strings", "bpe", _set("tokenizer.ggml.token_type", ARR, ["normal"] * 512), "WS111"),
    Case("bpe-tokens-without-types", "bpe", _more_tokens, "WS104"),
    Case("bpe-all-control", "bpe", _set("tokenizer.ggml.token_type", ARR, [3] * 512), "WS104", ALL),
    Case("bpe-character-lost", "bpe", _bpe_char_lost, "WS104", ALL),
    # byte-level BPE: special ids and flags
    Case("bpe-bos-id-past-vocab", "bpe", _set("tokenizer.ggml.bos_token_id", U32, 99_999), "WS104", ALL),
    Case("bpe-eos-id-past-vocab", "bpe", _set("tokenizer.ggml.eos_token_id", U32, 512), "WS104"),
    Case("bpe-unknown-id-past-vocab", "bpe", _set("tokenizer.ggml.unknown_token_id", U32, 4096), "WS104"),
    Case("bpe-padding-id-past-vocab", "bpe", _set("tokenizer.ggml.padding_token_id", U32, 2**31), "WS104"),
    Case("bpe-bos-id-negative", "bpe", _set("tokenizer.ggml.bos_token_id", I32, -1), "WS111"),
    Case("bpe-add-bos-string", "bpe", _set("tokenizer.ggml.add_bos_token", STR, "yes"), "WS111"),
    Case("bpe-model-number", "bpe", _set("tokenizer.ggml.model", U32, 2), "WS111"),
    Case("bpe-model-empty", "bpe", _set("tokenizer.ggml.model", STR, ""), "WS101"),
    # SentencePiece: merges (when the file has them)
    Case("spm-merge-without-space", "spm", _spm_merges(["\u2581t", "abc"]), "WS111", ALL),
    Case("spm-merge-three-parts", "spm", _spm_merges(["\u2581 t h"]), "WS111", ALL),
    Case("spm-merge-empty-string", "spm", _spm_merges([""]), "WS111"),
    Case("spm-merge-unknown-tokens", "spm", _spm_merges(["qqq zzz"]), "WS111"),
    Case("spm-merge-result-not-a-token", "spm", _spm_merges(["<s> </s>"]), "WS111"),
    Case("spm-merges-empty", "spm", _spm_merges([]), "WS111"),
    Case("spm-merges-nested", "spm", _set("tokenizer.ggml.merges", ARR, [["a", "b"]]), "WS111"),
    # SentencePiece: tokens, byte fallback, scores, types
    Case("spm-no-byte-tokens-no-unk", "spm", _without_bytes(0), "WS111", ALL),
    Case("spm-one-byte-token-missing", "spm", _without_bytes(255), "WS111"),
    Case("spm-only-one-piece", "spm", _spm_only_pieces, "WS111"),
    Case("spm-giant-token", "spm", _token(300, "a" * 200_000), "WS111", ALL),
    Case("spm-token-just-too-long", "spm", _token(300, "b" * 1025), "WS111"),
    Case("spm-tokens-empty", "spm", _set("tokenizer.ggml.tokens", ARR, []), "WS111"),
    Case("spm-scores-short", "spm", _per_token("tokenizer.ggml.scores", lambda s: s[:10]), "WS111", ALL),
    Case("spm-scores-long", "spm", _per_token("tokenizer.ggml.scores", lambda s: s + [0.0]), "WS111"),
    Case("spm-scores-strings", "spm", _set("tokenizer.ggml.scores", ARR, ["high"] * 512), "WS111"),
    Case("spm-scores-nan", "spm", _set("tokenizer.ggml.scores", ARR, [float("nan")] * 512), "WS111"),
    Case("spm-scores-a-number", "spm", _set("tokenizer.ggml.scores", U32, 7), "WS111"),
    Case("spm-no-scores-no-merges", "spm", lambda md: {}, "WS101", drop=("tokenizer.ggml.scores",)),
    Case("spm-types-short", "spm", _per_token("tokenizer.ggml.token_type", lambda t: t[:10]), "WS111"),
    Case("spm-type-99", "spm", _set("tokenizer.ggml.token_type", ARR, [99] * 512), "WS111", ALL),
    # SentencePiece: special ids and flags
    Case("spm-bos-id-past-vocab", "spm", _set("tokenizer.ggml.bos_token_id", U32, 600), "WS104"),
    Case("spm-eos-id-past-vocab", "spm", _set("tokenizer.ggml.eos_token_id", U32, 10**6), "WS104", ALL),
    Case("spm-unknown-id-past-vocab", "spm", _set("tokenizer.ggml.unknown_token_id", U32, 5000), "WS104"),
    Case("spm-padding-id-past-vocab", "spm", _set("tokenizer.ggml.padding_token_id", U32, 512), "WS104"),
    Case("spm-add-space-prefix-number", "spm", _set("tokenizer.ggml.add_space_prefix", U32, 2), "WS111"),
]

PARAMS = [pytest.param(case, name, id=f"{case.id}-{name}") for case in CASES for name in case.commands]
BASES = {"bpe": "gguf_base", "spm": "spm_base"}


def _damaged(case: Case, tmp: Path, request, vocabularies) -> Path:
    src = tmp / "src"
    src.mkdir()
    ckpt = src / "m.gguf"
    shutil.copy(request.getfixturevalue(BASES[case.base]), ckpt)
    gguf_rewrite(ckpt, set_=case.edit(vocabularies[case.base]), drop=case.drop)
    return ckpt


@pytest.mark.parametrize("case,name", PARAMS)
def test_hostile_gguf_tokenizer(case: Case, name: str, tmp_path, request, vocabularies, text):
    ckpt = _damaged(case, tmp_path, request, vocabularies)
    refused_cli(tmp_path, command(name, ckpt, tmp_path, text), case.code)


# ------------------------------------------------------------------ what is still shown, and what is accepted


def test_inspect_shows_a_damaged_tokenizer_with_its_code(tmp_path, request, vocabularies):
    ckpt = _damaged(CASES[0], tmp_path, request, vocabularies)
    o = cli("inspect", ckpt)
    assert o.exit == 0 and "[WS111]" in o.out and "tokenizer.ggml.merges[0] = 'ab'" in o.out, o.text


@pytest.mark.parametrize("bos", ["a b", "x:1", "$A", "<|begin of text|>"])
def test_any_bos_text_is_placed_by_the_template(tmp_path, request, vocabularies, bos):
    """A BOS token whose text has spaces, ':' or a leading '$' (the template string language's own syntax)
    is still put before every sequence, as itself."""
    from warmstart.checkpoint import load_checkpoint

    tokens = list(vocabularies["spm"]["tokenizer.ggml.tokens"])
    tokens[1] = bos
    ckpt = tmp_path / "m.gguf"
    shutil.copy(request.getfixturevalue("spm_base"), ckpt)
    gguf_rewrite(ckpt, set_={"tokenizer.ggml.tokens": (ARR, tokens), "tokenizer.ggml.add_bos_token": (BOOL, True)})
    with load_checkpoint(ckpt) as loaded:
        encoding = loaded.tokenizer.encode("hello world")
    assert encoding.ids[0] == 1 and encoding.tokens[0] == bos and 1 not in encoding.ids[1:]


def test_the_sound_base_files_pass(gguf_base, spm_base):
    for path in (gguf_base, spm_base):
        o = cli("validate", path)
        assert o.exit == 0 and "verdict: PASS" in o.out, o.text
