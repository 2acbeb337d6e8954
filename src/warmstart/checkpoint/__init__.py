"""Reading every checkpoint format (by content), writing HF directories atomically, aliases, hashing."""

from warmstart.checkpoint.aliases import resolve_checkpoint_path, sha256_file, sha256_files
from warmstart.checkpoint.load import Checkpoint, TensorInfo, load_checkpoint
from warmstart.checkpoint.write import (
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    save_hf_checkpoint,
    save_safetensors,
)

__all__ = [
    "Checkpoint", "TensorInfo", "atomic_write_bytes", "atomic_write_json", "atomic_write_text",
    "load_checkpoint", "resolve_checkpoint_path", "save_hf_checkpoint", "save_safetensors", "sha256_file",
    "sha256_files",
]
