"""``pretrain --init`` with document attention and a context extension, end to end on real files: the
extension is printed and recorded (config.json, warmstart.json, the model card), gate 7 runs on windows
of the new length, the extended checkpoint trains on past the old context and loads in transformers."""

from __future__ import annotations

import json

import pytest
import torch
from _ckpt_tools import ws

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    import argparse
    import inspect
    import shutil
    import textwrap

    d = tmp_path_factory.mktemp("corpus")
    for mod in (textwrap, argparse):
        shutil.copy(inspect.getsourcefile(mod), d / f"{mod.__name__}.py")
    return d


def test_warm_start_with_document_attention_and_a_longer_context(tiny_hf_dir, corpus, tmp_path):
    run = tmp_path / "run"
    proc = ws("pretrain", "--init", str(tiny_hf_dir), "--data", str(corpus), "--attention", "document",
              "--positions", "document", "--context-length", "1024", "--rope-scaling", "yarn:2", "--seq-len", "768",
              "--batch-size", "2", "--max-steps", "2", "--eval-tokens", "1536", "--eval-every", "0",
              "--val-fraction", "0.3", "--allow-untrained-init", "--out", str(run), cwd=tmp_path)
    assert "context extended at the warm start: context 512 -> 1024, rope_scaling None -> yarn x2" in proc.stdout
    step = run / "checkpoints" / (run / "checkpoints" / "latest").read_text().strip()
    config = json.loads((step / "config.json").read_text())
    assert config["max_position_embeddings"] == 1024
    assert config["rope_scaling"] == {"rope_type": "yarn", "factor": 2.0, "original_max_position_embeddings": 512}
    prov = json.loads((step / "warmstart.json").read_text())
    assert (prov["attention"], prov["positions"]) == ("document", "document")
    assert prov["context_extension"]["from"]["max_position_embeddings"] == 512
    assert prov["context_extension"]["to"]["rope_scaling"]["rope_type"] == "yarn"
    card = ws("card", str(step), "-o", str(tmp_path / "README.md"), cwd=tmp_path)
    text = (tmp_path / "README.md").read_text()
    assert card.returncode == 0 and "context extended at the warm start: context 512 -> 1024" in text
    assert "attention: document (positions: document)" in text

    from warmstart.checkpoint import load_checkpoint
    from warmstart.init import inference_model

    ours = inference_model(load_checkpoint(step))
    hf = transformers.AutoModelForCausalLM.from_pretrained(step, attn_implementation="eager").eval()
    ids = torch.randint(1, 500, (1, 900), generator=torch.Generator().manual_seed(0))  # past the old 512
    with torch.no_grad():
        assert (hf(ids).logits - ours(ids)).abs().max().item() <= 1e-4
