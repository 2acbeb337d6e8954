"""Corpus sources and their formats, tokenization into sharded token caches (``prepare``), the train/val
split, dataset views, mixtures, the batch samplers. Nothing here imports torch."""

from warmstart.data.build import build_dataset, build_eval_set
from warmstart.data.dataset import TokenDataset, TokenStream, is_token_cache, load_cache, open_entry
from warmstart.data.mixture import MixtureDataset, MixtureSampler, mixture_lines, parse_data_specs
from warmstart.data.sampler import BatchSampler
from warmstart.data.settings import DataSettings, default_cache_dir
from warmstart.data.sources import FileEntry, SourceStats, resolve_files, stdlib_dir
from warmstart.data.tokenizer import EOT, eos_id, load_tokenizer, tokenizer_hash, train_bpe, vocab_size

__all__ = [
    "BatchSampler", "DataSettings", "EOT", "FileEntry", "MixtureDataset", "MixtureSampler", "SourceStats",
    "TokenDataset", "TokenStream", "build_dataset", "build_eval_set", "default_cache_dir", "eos_id",
    "is_token_cache", "load_cache", "load_tokenizer", "mixture_lines", "open_entry", "parse_data_specs",
    "resolve_files", "stdlib_dir", "tokenizer_hash", "train_bpe", "vocab_size",
]
