"""How a model reads a packed window: which earlier tokens a token attends to, and its RoPE positions.

A training window packs documents end to end, each followed by the separator token the data inserts
(EOS). ``Packing`` says what the model makes of that:

- ``attention``: ``causal`` (every token attends to every earlier token of the window, across
  documents) or ``document`` (only to earlier tokens of its own document: a block-causal mask);
- ``positions``: ``window`` (RoPE positions 0..T-1 across the window) or ``document`` (positions
  restart at 0 at each document's first token, as Hugging Face's packing with ``position_ids`` does).

Document boundaries come from the separator positions inside each window, on the device, once per
batch: a separator belongs to the document it ends. The masks are built once per batch, one for each
distinct sliding window among the layers (a sliding layer keeps its window inside the document):

- on CUDA a FlexAttention ``BlockMask`` (``torch.compile``d ``create_block_mask``: the mask is computed
  block by block, never as a [B, T, T] tensor; fully masked blocks are skipped by the kernel);
- elsewhere a boolean [B, 1, T, T] mask for SDPA (CPU runs and tests: FlexAttention has no CPU backward).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch
import torch.nn.functional as F

CAUSAL, DOCUMENT = "causal", "document"
WINDOW = "window"
ATTENTIONS = (CAUSAL, DOCUMENT)
POSITIONS = (WINDOW, DOCUMENT)
FLEX_BLOCK = 128  # FlexAttention's block size; document ids are padded to a multiple of it


@dataclass(frozen=True)
class Packing:
    """What a model makes of packed windows (a run's ``--attention`` / ``--positions``; not saved with it)."""

    attention: str = CAUSAL
    positions: str = WINDOW
    separator: int | None = None  # the token id that ends each document

    @property
    def per_document(self) -> bool:
        return self.separator is not None and (self.attention == DOCUMENT or self.positions == DOCUMENT)


def document_ids(input_ids: torch.Tensor, separator: int) -> torch.Tensor:
    """[B, T] int32: the index of each token's document in its window (a separator ends its document)."""
    ends = (input_ids == separator).to(torch.int32)
    return torch.cumsum(ends, dim=1, dtype=torch.int32) - ends


def document_positions(docs: torch.Tensor) -> torch.Tensor:
    """[B, T] int64: each token's distance from its document's first token in the window."""
    T = docs.shape[1]
    idx = torch.arange(T, device=docs.device).expand_as(docs)
    first = torch.ones_like(docs, dtype=torch.bool)
    first[:, 1:] = docs[:, 1:] != docs[:, :-1]
    start = torch.where(first, idx, torch.zeros_like(idx)).cummax(dim=1).values
    return idx - start


def use_flex(device: torch.device) -> bool:
    return device.type == "cuda"


def sdpa_mask(docs: torch.Tensor, window: int | None) -> torch.Tensor:
    """[B, 1, T, T] bool: query i sees key j of its own document with j <= i (and i - j < window)."""
    T = docs.shape[1]
    pos = torch.arange(T, device=docs.device)
    seen = (pos[None, :] <= pos[:, None]) & (docs[:, :, None] == docs[:, None, :])
    if window is not None:
        seen = seen & (pos[:, None] - pos[None, :] < window)[None]
    return seen[:, None]


@lru_cache(maxsize=None)
def _compiled_create_block_mask():
    from torch.nn.attention.flex_attention import create_block_mask

    return torch.compile(create_block_mask)


@lru_cache(maxsize=None)
def _compiled_flex_attention():
    from torch.nn.attention.flex_attention import flex_attention

    return torch.compile(flex_attention)


def _padded(docs: torch.Tensor) -> torch.Tensor:
    """Document ids padded to a multiple of the block size with ids of their own (FlexAttention's kernels
    evaluate the mask over whole blocks; the padding keeps every index in bounds and matches nothing)."""
    T = docs.shape[1]
    pad = -T % FLEX_BLOCK
    if not pad:
        return docs
    fill = -1 - torch.arange(pad, device=docs.device, dtype=docs.dtype)
    return torch.cat([docs, fill.expand(docs.shape[0], pad)], dim=1)


def _document_mask_mod(docs: torch.Tensor, window: int | None):
    def document_causal(b, h, q, kv):
        return (docs[b, q] == docs[b, kv]) & (kv <= q)

    def document_sliding(b, h, q, kv):
        return (docs[b, q] == docs[b, kv]) & (kv <= q) & (q - kv < window)

    return document_causal if window is None else document_sliding


def block_mask(docs: torch.Tensor, window: int | None):
    """The FlexAttention ``BlockMask`` of ``docs`` (built on their device, no host sync)."""
    B, T = docs.shape
    mod = _document_mask_mod(_padded(docs), window)
    return _compiled_create_block_mask()(mod, B, None, T, T, device=docs.device)


def document_masks(docs: torch.Tensor, windows: set[int | None]) -> dict:
    """{window: mask} for every distinct window among the layers (None: full attention)."""
    build = block_mask if use_flex(docs.device) else sdpa_mask
    return {w: build(docs, w) for w in windows}


def masked_attention(q, k, v, mask, scale: float | None) -> torch.Tensor:
    """Attention of [B, H, T, D] queries under a per-batch document mask (``document_masks``)."""
    gqa = q.shape[1] != k.shape[1]
    if isinstance(mask, torch.Tensor):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale, enable_gqa=gqa)
    if torch.compiler.is_compiling():  # inside a compiled block: dynamo traces FlexAttention itself
        from torch.nn.attention.flex_attention import flex_attention

        return flex_attention(q, k, v, block_mask=mask, scale=scale, enable_gqa=gqa)
    return _compiled_flex_attention()(q, k, v, block_mask=mask, scale=scale, enable_gqa=gqa)


__all__ = ["ATTENTIONS", "CAUSAL", "DOCUMENT", "POSITIONS", "Packing", "WINDOW", "block_mask", "document_ids",
           "document_masks", "document_positions", "masked_attention", "sdpa_mask"]
