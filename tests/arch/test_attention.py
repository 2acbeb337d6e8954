"""Document attention and document positions (``--attention document``, ``--positions document``) are exact.

For every family of the spec registry (and Mistral's sliding window on the llama family): a window
holding one document gives the logits of causal attention; a window packing several documents gives,
for each document, the logits of that document alone in a window of its own, and the gradients of the
packed loss equal the sum of the documents' own. On CPU through SDPA with a boolean mask; on CUDA
(marked ``gpu``) through FlexAttention's block mask. fp32, TF32 off.
"""

from __future__ import annotations

import pytest
import torch

from warmstart.arch import CausalLM, get_preset
from warmstart.arch.attention import DOCUMENT, Packing, document_ids, document_positions, sdpa_mask
from warmstart.arch.families import SPECS

SEP = 0  # the separator (EOS) id of these tests

DEVICES = [
    pytest.param("cpu", id="cpu"),
    pytest.param("cuda", id="cuda", marks=[pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(),
                                                                                  reason="needs a CUDA device")]),
]


def _smallest_preset(spec) -> str:
    return min(spec.presets, key=lambda name: get_preset(name).num_parameters())


def _configs() -> dict:
    """The smallest preset of every family in the registry, and llama with Mistral's sliding window."""
    cfgs = {spec.name: get_preset(_smallest_preset(spec)) for spec in SPECS.values()}
    cfgs["llama+window"] = cfgs["llama"].replace(sliding_window=6)
    return cfgs


CONFIGS = _configs()


def _model(name: str, device: str, packing: Packing | None = None) -> CausalLM:
    torch.manual_seed(0)
    model = CausalLM(CONFIGS[name])
    model.reset_parameters(seed=1)
    with torch.no_grad():  # non-trivial norms and biases
        for pname, p in model.named_parameters():
            if "norm" in pname or pname.endswith(".bias"):
                p.add_(0.1 * torch.randn(p.shape))
    model = model.to(device).eval()
    if packing is not None:
        model.packing = packing
    return model


@pytest.fixture(autouse=True)
def _no_tf32():
    matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul, cudnn


def _documents(vocab: int, lengths: list[int], seed: int) -> list[torch.Tensor]:
    """Documents of random non-separator ids, each but the last ending with the separator."""
    g = torch.Generator().manual_seed(seed)
    docs = [torch.randint(1, vocab, (n,), generator=g) for n in lengths]
    return [torch.cat([d, torch.tensor([SEP])]) if i < len(docs) - 1 else d for i, d in enumerate(docs)]


LAYOUTS = [[7, 13, 10], [1, 20, 3, 5]]  # tokens per document, a separator after each but the last: 32 a window


def test_document_ids_and_positions():
    ids = torch.tensor([[5, 0, 7, 8, 0, 0, 9], [1, 2, 3, 4, 5, 6, 0]])
    assert document_ids(ids, 0).tolist() == [[0, 0, 1, 1, 1, 2, 3], [0, 0, 0, 0, 0, 0, 0]]
    assert document_positions(document_ids(ids, 0)).tolist() == [[0, 1, 0, 1, 2, 0, 0], [0, 1, 2, 3, 4, 5, 6]]
    mask = sdpa_mask(document_ids(ids, 0), window=2)[0, 0]
    assert mask[3].tolist() == [False, False, True, True, False, False, False]  # own document, within the window
    assert mask[4].tolist() == [False, False, False, True, True, False, False]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", list(CONFIGS))
def test_one_document_per_window_is_causal_attention(name, device):
    causal = _model(name, device)
    ids = torch.randint(1, causal.cfg.vocab_size, (2, 30), generator=torch.Generator().manual_seed(3)).to(device)
    with torch.no_grad():
        ref = causal(ids)
        for positions in ("window", "document"):
            causal.packing = Packing(DOCUMENT, positions, SEP)
            assert (causal(ids) - ref).abs().max().item() <= 1e-5, positions


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("positions", ["document", "window"])
@pytest.mark.parametrize("name", list(CONFIGS))
def test_each_document_sees_only_itself(name, positions, device):
    model = _model(name, device, Packing(DOCUMENT, positions, SEP))
    rows = [_documents(model.cfg.vocab_size, lengths, seed) for seed, lengths in enumerate(LAYOUTS)]
    packed = torch.stack([torch.cat(docs) for docs in rows]).to(device)
    with torch.no_grad():
        logits = model(packed)
        for b, docs in enumerate(rows):
            start = 0
            for doc in docs:
                alone = model(doc[None].to(device))[0]
                got = logits[b, start:start + len(doc)]
                assert (got - alone).abs().max().item() <= 1e-4, (b, start)
                start += len(doc)


def _loss_sum(model: CausalLM, ids: torch.Tensor) -> torch.Tensor:
    """The fused LM head + loss (``CausalLM.loss``) summed over the targets."""
    return model.loss(ids[:, :-1], ids[:, 1:]) * ids[:, 1:].numel()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", list(CONFIGS))
def test_gradients_are_those_of_the_documents_alone(name, device):
    """Packed [doc1 SEP doc2 SEP doc3]: the summed loss over the window's targets, less the targets that
    cross a boundary (the separator predicting the next document's first token), has the gradients of the
    documents' own losses summed."""
    model = _model(name, device, Packing(DOCUMENT, "document", SEP))
    docs = _documents(model.cfg.vocab_size, LAYOUTS[0], seed=5)
    packed = torch.cat(docs)[None].to(device)
    targets = packed[:, 1:].clone()
    ends = torch.cumsum(torch.tensor([len(d) for d in docs[:-1]]), 0) - 1
    targets[0, ends.to(device)] = -100  # the targets that lie in the next document
    model.zero_grad()
    (model.loss(packed[:, :-1], targets) * (targets != -100).sum()).backward()
    packed_grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    for doc in docs:
        _loss_sum(model, doc[None].to(device)).backward()
    for n, p in model.named_parameters():
        scale = max(1.0, p.grad.abs().max().item())
        assert (packed_grads[n] - p.grad).abs().max().item() <= 1e-4 * scale, n


@pytest.mark.parametrize("device", DEVICES)
def test_document_attention_under_activation_checkpointing_and_training(device):
    model = _model("gemma3", device, Packing(DOCUMENT, "document", SEP)).train()
    docs = _documents(model.cfg.vocab_size, LAYOUTS[1], seed=2)
    packed = torch.cat(docs)[None].to(device)
    grads = []
    for checkpointed in (False, True):
        model.activation_checkpointing = checkpointed
        model.zero_grad()
        _loss_sum(model, packed).backward()
        grads.append([p.grad.clone() for p in model.parameters()])
    for a, b in zip(*grads, strict=True):
        assert torch.allclose(a, b, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("window", [None, 6])
def test_flex_block_mask_equals_the_boolean_mask(window):
    """The CUDA path's FlexAttention block mask (run forward on CPU here; compiled) gives the SDPA path's
    attention: documents, causality, the sliding window and a length that is not a multiple of the block."""
    from warmstart.arch.attention import block_mask, masked_attention

    g = torch.Generator().manual_seed(7)
    ids = torch.randint(1, 50, (2, 200), generator=g)
    ids[0, [30, 31, 90, 150]] = SEP
    ids[1, [5, 160]] = SEP
    docs = document_ids(ids, SEP)
    q = torch.randn(2, 4, 200, 16, generator=g)
    k, v = torch.randn(2, 2, 200, 16, generator=g), torch.randn(2, 2, 200, 16, generator=g)
    with torch.no_grad():
        want = masked_attention(q, k, v, sdpa_mask(docs, window), scale=0.3)
        got = masked_attention(q, k, v, block_mask(docs, window), scale=0.3)
    assert (got - want).abs().max().item() <= 1e-5
