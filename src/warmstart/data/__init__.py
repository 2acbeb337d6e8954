"""Corpus sources, tokenization, packing, the token cache, the train/val split, mixtures, the batch samplers."""

from warmstart.data.dataset import (
    TokenDataset, build_dataset, build_eval_set, default_cache_dir, is_token_cache, load_cache,
)
from warmstart.data.mixture import MixtureDataset, MixtureSampler, mixture_lines, parse_data_specs
from warmstart.data.sampler import BatchSampler
from warmstart.data.sources import DEFAULT_INCLUDE, Document, SourceStats, resolve_files, stdlib_dir
from warmstart.data.tokenizer import EOT, eos_id, load_tokenizer, tokenizer_hash, train_bpe, vocab_size

__all__ = [
    "BatchSampler", "DEFAULT_INCLUDE", "Document", "EOT", "MixtureDataset", "MixtureSampler", "SourceStats",
    "TokenDataset", "build_dataset", "build_eval_set", "default_cache_dir", "eos_id", "is_token_cache",
    "load_cache", "load_tokenizer", "mixture_lines", "parse_data_specs", "resolve_files", "stdlib_dir",
    "tokenizer_hash", "train_bpe", "vocab_size",
]
