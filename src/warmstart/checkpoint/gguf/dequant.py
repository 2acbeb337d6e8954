"""Dequantise GGUF tensor data to torch tensors.

F32/F16/BF16 (and integer types) keep their dtype; Q8_0 / Q4_0 / Q4_1 (the types of most small
GGUFs) go through torch kernels here; every other GGML type through ``gguf.quants.dequantize``.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np
import torch

from warmstart.errors import UnreadableError

# Types warmstart dequantises: the float types and the GGML quantisations llama.cpp writes by default.
DEQUANTISABLE = ("F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q4_K", "Q5_K", "Q6_K",
                 "Q2_K", "Q3_K", "Q8_K")
_INT_TYPES = {"I8": np.int8, "I16": np.int16, "I32": np.int32, "I64": np.int64}


def dequantize(rows: np.ndarray, type_name: str, shape: tuple[int, ...], *, what: str, path: Path) -> torch.Tensor:
    """The tensor stored as ``rows`` (its raw bytes, ``[outer rows..., bytes_per_row]``) in ``shape``.

    ``what`` names the tensor in the refusal for a type that cannot be dequantised.
    """
    if type_name == "F32":
        return torch.from_numpy(rows.view(np.float32).reshape(shape))
    if type_name == "F16":
        return torch.from_numpy(rows.view(np.float16).reshape(shape))
    if type_name == "BF16":
        return torch.from_numpy(rows.view(np.int16).reshape(shape)).view(torch.bfloat16)
    if type_name == "F64":
        return torch.from_numpy(rows.view(np.float64).reshape(shape))
    if type_name in _INT_TYPES:
        return torch.from_numpy(rows.view(_INT_TYPES[type_name]).reshape(shape))
    if type_name in _FAST_DEQUANT:
        with _one_thread():
            return _FAST_DEQUANT[type_name](rows, shape)
    try:
        return dequantize_reference(rows, type_name, shape)
    except NotImplementedError:
        raise UnreadableError(
            f"GGUF tensor '{what}' uses quantisation {type_name}, which cannot be dequantised "
            f"(supported: {', '.join(DEQUANTISABLE)})",
            fix="re-quantise the model to one of the supported types, or use the safetensors original",
            path=path,
        ) from None


# ------------------------------------------------------- fast dequantisers
# Torch versions of gguf.quants' Q8_0 / Q4_0 / Q4_1 (the types of most small GGUFs): the same
# float32 operations in the same order, so results are bit-identical, but multi-threaded and with
# one float32 allocation per tensor instead of numpy's several temporaries.


@contextlib.contextmanager
def _one_thread():
    """Elementwise dequantisation is memory-bound: intra-op threads buy little and, on a busy
    machine, OpenMP barriers slow it down. Run it on one thread."""
    n = torch.get_num_threads()
    if n > 1:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if n > 1:
            torch.set_num_threads(n)


def _blocks(rows: np.ndarray, block_bytes: int) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(rows).reshape(-1, block_bytes))


def _f16_column(blocks: torch.Tensor, start: int) -> torch.Tensor:
    return blocks[:, start:start + 2].contiguous().view(torch.float16).float()  # [n_blocks, 1]


def _nibbles(qs: torch.Tensor) -> torch.Tensor:
    """[n_blocks, 16] bytes -> [n_blocks, 32] float32: low nibbles first, then high (ggml order)."""
    out = torch.empty(qs.shape[0], 32, dtype=torch.float32)
    out[:, :16] = qs & 0x0F
    out[:, 16:] = qs >> 4
    return out


def _dequant_q8_0(rows: np.ndarray, shape: tuple[int, ...]) -> torch.Tensor:
    b = _blocks(rows, 34)
    out = b[:, 2:].view(torch.int8).float()
    return out.mul_(_f16_column(b, 0)).reshape(shape)


def _dequant_q4_0(rows: np.ndarray, shape: tuple[int, ...]) -> torch.Tensor:
    b = _blocks(rows, 18)
    out = _nibbles(b[:, 2:])
    return out.sub_(8.0).mul_(_f16_column(b, 0)).reshape(shape)


def _dequant_q4_1(rows: np.ndarray, shape: tuple[int, ...]) -> torch.Tensor:
    b = _blocks(rows, 20)
    out = _nibbles(b[:, 4:])
    return out.mul_(_f16_column(b, 0)).add_(_f16_column(b, 2)).reshape(shape)


_FAST_DEQUANT = {"Q8_0": _dequant_q8_0, "Q4_0": _dequant_q4_0, "Q4_1": _dequant_q4_1}


def dequantize_reference(rows: np.ndarray, type_name: str, shape: tuple[int, ...]) -> torch.Tensor:
    """gguf.quants' numpy dequantisation (the reference the fast paths are tested against)."""
    from gguf import quants
    from gguf.constants import GGMLQuantizationType

    out = quants.dequantize(np.ascontiguousarray(rows), getattr(GGMLQuantizationType, type_name))
    return torch.from_numpy(np.ascontiguousarray(out, dtype=np.float32).reshape(shape))


__all__ = ["DEQUANTISABLE", "dequantize", "dequantize_reference"]
