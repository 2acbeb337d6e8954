"""Families warmstart recognises but does not train, so that it can refuse them by name.

Each has a kind (an encoder, an encoder-decoder, a non-transformer, or a decoder family that
warmstart does not implement) and, for the common ones, the tensor-name pattern that gives it away.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from warmstart.arch.families._spec import ENCODER, ENCODER_DECODER, NON_TRANSFORMER, UNSUPPORTED_DECODER


@dataclass(frozen=True)
class Family:
    name: str  # canonical slug, e.g. "gpt2"
    kind: str
    display: str  # human name, e.g. "GPT-2"
    hf_architecture: str | None = None  # HF class
    model_type: str | None = None  # HF config model_type
    aliases: tuple[str, ...] = ()


KNOWN: tuple[Family, ...] = (
    # Decoder families not implemented.
    Family("gpt2", UNSUPPORTED_DECODER, "GPT-2", "GPT2LMHeadModel", "gpt2", ("gpt", "openai-gpt")),
    Family("gpt_neox", UNSUPPORTED_DECODER, "GPT-NeoX", "GPTNeoXForCausalLM", "gpt_neox",
           ("gptneox", "pythia")),
    Family("gptj", UNSUPPORTED_DECODER, "GPT-J", "GPTJForCausalLM", "gptj", ()),
    Family("opt", UNSUPPORTED_DECODER, "OPT", "OPTForCausalLM", "opt", ()),
    Family("gemma", UNSUPPORTED_DECODER, "Gemma", "GemmaForCausalLM", "gemma", ()),
    Family("gemma2", UNSUPPORTED_DECODER, "Gemma 2", "Gemma2ForCausalLM", "gemma2", ()),
    Family("phi", UNSUPPORTED_DECODER, "Phi", "PhiForCausalLM", "phi", ("phi2", "phi3", "phi4")),
    Family("falcon", UNSUPPORTED_DECODER, "Falcon", "FalconForCausalLM", "falcon", ()),
    Family("bloom", UNSUPPORTED_DECODER, "BLOOM", "BloomForCausalLM", "bloom", ()),
    Family("mixtral", UNSUPPORTED_DECODER, "Mixtral", "MixtralForCausalLM", "mixtral", ()),
    Family("starcoder2", UNSUPPORTED_DECODER, "StarCoder2", "Starcoder2ForCausalLM", "starcoder2", ()),
    Family("qwen2_moe", UNSUPPORTED_DECODER, "Qwen2-MoE", "Qwen2MoeForCausalLM", "qwen2_moe", ()),
    # Encoders.
    Family("bert", ENCODER, "BERT", "BertModel", "bert", ()),
    Family("roberta", ENCODER, "RoBERTa", "RobertaModel", "roberta", ()),
    Family("distilbert", ENCODER, "DistilBERT", "DistilBertModel", "distilbert", ()),
    Family("electra", ENCODER, "ELECTRA", "ElectraModel", "electra", ()),
    Family("xlm_roberta", ENCODER, "XLM-RoBERTa", "XLMRobertaModel", "xlm-roberta",
           ("xlmroberta", "xlm-r", "xlmr")),
    Family("albert", ENCODER, "ALBERT", "AlbertModel", "albert", ()),
    Family("deberta", ENCODER, "DeBERTa", "DebertaModel", "deberta", ("deberta_v2", "debertav2")),
    Family("modernbert", ENCODER, "ModernBERT", "ModernBertModel", "modernbert", ()),
    # Encoder-decoders.
    Family("t5", ENCODER_DECODER, "T5", "T5ForConditionalGeneration", "t5", ("mt5", "umt5", "flan_t5")),
    Family("bart", ENCODER_DECODER, "BART", "BartForConditionalGeneration", "bart", ("mbart",)),
    Family("pegasus", ENCODER_DECODER, "Pegasus", "PegasusForConditionalGeneration", "pegasus", ()),
    Family("marian", ENCODER_DECODER, "Marian", "MarianMTModel", "marian", ()),
    Family("whisper", ENCODER_DECODER, "Whisper", "WhisperForConditionalGeneration", "whisper", ()),
    # Non-transformers.
    Family("mamba", NON_TRANSFORMER, "Mamba", "MambaForCausalLM", "mamba", ("mamba2",)),
    Family("rwkv", NON_TRANSFORMER, "RWKV", "RwkvForCausalLM", "rwkv", ("rwkv5", "rwkv6", "rwkv7")),
)

# Tensor-name patterns of the foreign families, in the order they are tried (roberta before bert:
# RoBERTa's names also fit BERT's pattern).
FOREIGN_NAMES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("gpt2", re.compile(r"(^|\.)h\.\d+\.attn\.c_attn\.|(^|\.)wpe\.weight$")),
    ("gpt_neox", re.compile(r"gpt_neox\.|(^|\.)attention\.query_key_value\.|(^|\.)embed_in\.weight$")),
    ("opt", re.compile(r"(^|\.)decoder\.layers\.\d+\.(fc1|self_attn_layer_norm)\.|decoder\.embed_positions")),
    ("roberta", re.compile(r"^roberta\.")),
    ("bert", re.compile(r"(^|\.)encoder\.layer\.\d+\.attention\.self\.(query|key|value)\.|"
                        r"(^|\.)embeddings\.word_embeddings\.weight$")),
    ("t5", re.compile(r"(^|\.)(encoder|decoder)\.block\.\d+\.layer\.\d+\.|"
                      r"(^|\.)(SelfAttention|EncDecAttention)\.")),
    ("mamba", re.compile(r"(^|\.)mixer\.(A_log|conv1d|in_proj|x_proj|dt_proj)|ssm_(a|conv1d|d|dt)\b")),
    ("rwkv", re.compile(r"(^|\.)(time_decay|time_first|time_mix_[kvr]|time_maa_)|"
                        r"rwkv\.blocks\.|blocks\.\d+\.att\.")),
)
