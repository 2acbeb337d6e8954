"""Regional compilation (train/compile.py) on CPU: one graph for every block, the eager numbers, eager eval."""

from __future__ import annotations

import copy

import pytest
import torch

from warmstart.arch import CausalLM, get_preset
from warmstart.arch.attention import Packing
from warmstart.train.compile import blocks_compiled, compile_blocks

pytestmark = pytest.mark.slow  # inductor compiles C++ on CPU (~30 s on 2 cores)


def _pair(preset: str, act_ckpt: bool, packing: Packing | None = None):
    cfg = get_preset(preset).replace(num_layers=3)
    eager = CausalLM(cfg)
    eager.reset_parameters(0)
    eager.packing = packing or eager.packing
    compiled = copy.deepcopy(eager)
    compiled.activation_checkpointing = act_ckpt
    assert compile_blocks(compiled) is compiled and blocks_compiled(compiled) and not blocks_compiled(eager)
    return cfg, eager, compiled


def _loss_and_grads(model, ids):
    model.zero_grad(set_to_none=True)
    loss = model.loss(ids[:, :-1], ids[:, 1:])
    loss.backward()
    return loss.item(), {n: p.grad.clone() for n, p in model.named_parameters()}


DOCUMENTS = Packing("document", "document", separator=0)  # id 0 ends a document


@pytest.mark.parametrize(("preset", "act_ckpt", "packing"),
                         [("llama-tiny", False, None), ("qwen2-tiny", True, DOCUMENTS)])
def test_compiled_blocks_equal_eager_with_one_graph(preset, act_ckpt, packing):
    """Causal attention, and document attention + positions (a new mask every batch, no new graph)."""
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    cfg, eager, compiled = _pair(preset, act_ckpt, packing)
    for seed in (1, 2):  # two batches: their document boundaries differ
        ids = torch.randint(0, cfg.vocab_size, (2, 25), generator=torch.Generator().manual_seed(seed))
        ids[:, 3 * seed::7] = 0
        want = _loss_and_grads(eager, ids)
        got = _loss_and_grads(compiled, ids)
        assert abs(got[0] - want[0]) <= 1e-5
        for n, g in want[1].items():
            assert torch.allclose(got[1][n], g, rtol=1e-4, atol=1e-6), n
    assert compiled.activation_checkpointing is False  # the blocks checkpoint themselves
    graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    assert graphs == 1  # the first block's graph serves all three

    with torch.no_grad():  # evaluation: eager blocks, no new graph
        assert torch.allclose(compiled(ids), eager(ids), atol=1e-5)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == graphs
    assert compile_blocks(compiled) is compiled  # idempotent
