"""Reading every checkpoint format (by content), its structure and provenance, lineage hashing,
writing HF directories atomically, aliases."""

from warmstart.checkpoint.aliases import resolve_checkpoint_path, sha256_file, sha256_files
from warmstart.checkpoint.lineage import lineage_hash, parent_record
from warmstart.checkpoint.load import Checkpoint, TensorInfo, load_checkpoint
from warmstart.checkpoint.locate import locate_checkpoint, resolve_run_dir
from warmstart.checkpoint.metadata import provenance
from warmstart.checkpoint.structure import read_structure, tensor_hashes
from warmstart.checkpoint.write import (
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    save_hf_checkpoint,
    save_safetensors,
)

__all__ = [
    "Checkpoint", "TensorInfo", "atomic_write_bytes", "atomic_write_json", "atomic_write_text", "lineage_hash",
    "load_checkpoint", "locate_checkpoint", "parent_record", "provenance", "read_structure", "resolve_checkpoint_path",
    "resolve_run_dir", "save_hf_checkpoint", "save_safetensors", "sha256_file", "sha256_files", "tensor_hashes",
]
