"""The real Gemma 3 270M and Qwen2.5-Coder-0.5B-Instruct GGUFs through the CLI, each: `inspect`; `eval` on
stdlib windows with a loss equal to transformers' GGUF loading (within 0.01); `pretrain --init` (every gate
passes, the step-0 loss printed beside ln V, 20 CPU steps, the validation loss does not rise); `export --to
hf`, which transformers loads with logits equal to warmstart's. Slow (minutes on 2 CPU cores; timings in
bench/results/cpu/real_weights.txt); skipped with the reason when the part packages are absent."""

from __future__ import annotations

import gc
import inspect
import json
import math
import shutil

import pytest
import torch
from _ckpt_tools import ws

from warmstart.checkpoint import load_checkpoint, resolve_checkpoint_path

pytestmark = pytest.mark.slow
ALIASES = [pytest.param("gemma3-270m", marks=pytest.mark.gemma3, id="gemma3"),
           pytest.param("qwen2.5-coder-0.5b-instruct", marks=pytest.mark.qwen25coder, id="qwen25coder")]
EXPECTED = {"gemma3-270m": ("gemma3", "llama"), "qwen2.5-coder-0.5b-instruct": ("qwen2", "gpt2")}
SEQ_LEN, MAX_TOKENS = 128, 1025


@pytest.fixture(scope="module")
def stdlib(tmp_path_factory):
    """A few standard-library modules: the evaluation and training text."""
    import argparse
    import csv
    import shlex
    import textwrap

    d = tmp_path_factory.mktemp("stdlib")
    for mod in (textwrap, csv, shlex, argparse):
        shutil.copy(inspect.getsourcefile(mod), d / f"{mod.__name__}.py")
    return d


def _transformers_gguf(alias: str):
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("accelerate")  # transformers' GGUF loader needs it
    path = resolve_checkpoint_path(alias)
    tok = transformers.AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    model = transformers.AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name,
                                                             dtype=torch.float32).eval()
    return tok, model


@pytest.mark.parametrize("alias", ALIASES)
def test_inspect(alias, tmp_path):
    family, tokenizer = EXPECTED[alias]
    s = json.loads(ws("inspect", alias, "--json", cwd=tmp_path).stdout)
    assert s["format"] == "gguf" and s["family"]["declared"] == family and s["family"]["evidence"] == family
    assert s["model"]["family"] == family and s["config_error"] is None
    assert s["tokenizer"]["kind"] == tokenizer and s["tokenizer"]["supported"] and s["tokenizer"]["present"]
    assert s["tokenizer"]["vocab_size"] == s["vocab_size"]
    human = ws("inspect", alias, cwd=tmp_path).stdout
    assert s["family"]["display"] in human and all(w in human for w in s["tokenizer"]["kind_name"].split())


@pytest.mark.parametrize("alias", ALIASES)
def test_eval_loss_equals_transformers(alias, tmp_path, stdlib):
    from warmstart.data.texts import read_texts
    from warmstart.train.evaluate import evaluate_tokens

    ours = json.loads(ws("eval", alias, "--data", str(stdlib), "--seq-len", str(SEQ_LEN), "--max-tokens",
                         str(MAX_TOKENS), "--json", cwd=tmp_path).stdout)
    tok, hf = _transformers_gguf(alias)
    ids: list[int] = []
    for _, text in read_texts(stdlib):  # the same documents, joined with EOS, tokenized by transformers
        ids += ([hf.config.eos_token_id] if ids else []) + tok(text, add_special_tokens=False)["input_ids"]
    loss, count = evaluate_tokens(lambda x: hf(x).logits, ids[:MAX_TOKENS], seq_len=SEQ_LEN, batch_size=4,
                                  device=torch.device("cpu"))
    assert ours["tokens"] == count == MAX_TOKENS - 1
    assert abs(ours["loss"] - loss) <= 0.01, (ours["loss"], loss)
    assert ours["loss"] < 0.6 * math.log(hf.config.vocab_size)  # a trained model, not chance
    print(f"{alias}: warmstart eval loss {ours['loss']:.6f}, transformers {loss:.6f}, {ours['seconds']} s")


@pytest.mark.parametrize("alias", ALIASES)
def test_pretrain_init_20_cpu_steps(alias, tmp_path, stdlib):
    # --lr 1e-5: batches of 128 tokens are tiny; at the default 5e-5 the 0.5B instruct model's validation
    # loss rose (2.68 -> 2.74 after 20 steps), at 1e-5 it falls (2.68 -> 2.47).
    run = ws("pretrain", "--init", alias, "--data", str(stdlib), "--max-steps", "20", "--seq-len", "64",
             "--batch-size", "2", "--lr", "1e-5", "--eval-every", "10", "--eval-tokens", "1024",
             "--val-fraction", "0.3", "--save-every", "0", "--log-every", "5", "--out", "run", cwd=tmp_path,
             timeout=2400)  # 4 to 16 minutes on 2 shared CPU cores
    out = run.stdout + run.stderr
    for gate in ("readable", "family", "evidence", "tokenizer", "values", "population"):
        assert any(line.startswith(f"gate {gate}") and "PASS" in line for line in out.splitlines()), gate
    assert "step 0 val_loss" in out and "(random init ≈ ln V = " in out
    recs = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    val = {r["step"]: r["val_loss"] for r in recs if r.get("val_loss") is not None}
    assert sorted(val)[0] == 0 and max(val) == 20, val
    assert val[20] <= val[0] + 0.02, val  # continued pretraining does not make it worse
    assert val[0] < 0.6 * math.log(load_checkpoint(resolve_checkpoint_path(alias)).model_config().vocab_size)
    print(f"{alias}: val_loss by step {val}")


@pytest.mark.parametrize("alias", ALIASES)
def test_export_hf_loads_in_transformers_with_equal_logits(alias, tmp_path):
    transformers = pytest.importorskip("transformers")
    from warmstart.init.population import populate_model

    report = json.loads(ws("export", alias, "--to", "hf", "-o", "hf", "--json", cwd=tmp_path).stdout)
    assert report["verify"]["max_rel_diff_vs_rounded_source"] <= 1e-4
    ids = torch.randint(0, 30000, (1, 96), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours = populate_model(load_checkpoint(resolve_checkpoint_path(alias))).eval()(ids)
        gc.collect()
        hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf", dtype=torch.float32).eval()
        theirs = hf(ids).logits
    assert type(hf).__name__ == {"gemma3": "Gemma3ForCausalLM", "qwen2": "Qwen2ForCausalLM"}[EXPECTED[alias][0]]
    assert (ours - theirs).abs().max().item() <= 1e-4
    tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
    text = "def fib(n):\n    return n if n < 2 else fib(n - 1) + fib(n - 2)  # é 中文 🚀"
    assert tok(text)["input_ids"] == load_checkpoint(resolve_checkpoint_path(alias)).tokenizer.encode(text).ids
