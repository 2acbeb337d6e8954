"""Family registry: normalise architecture names and classify them.

Any of ``Qwen2ForCausalLM``, ``qwen2``, ``Qwen2``, ``Qwen2Model`` normalise to
``qwen2``. Each known family has a kind: a supported decoder (what warmstart
trains), an encoder, an encoder-decoder, a non-transformer, or a decoder family
that warmstart does not implement.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

SUPPORTED_DECODER = "supported-decoder"
UNSUPPORTED_DECODER = "unsupported-decoder"
ENCODER = "encoder"
ENCODER_DECODER = "encoder-decoder"
NON_TRANSFORMER = "non-transformer"


@dataclass(frozen=True)
class Family:
    name: str  # canonical slug, e.g. "qwen2"
    kind: str
    display: str  # human name, e.g. "Qwen2"
    hf_architecture: str | None = None  # HF CausalLM class for supported families
    model_type: str | None = None  # HF config model_type
    aliases: tuple[str, ...] = ()


_FAMILIES: tuple[Family, ...] = (
    # Supported decoder-only families (SPEC §3).
    Family("llama", SUPPORTED_DECODER, "Llama", "LlamaForCausalLM", "llama",
           ("llama2", "llama3", "mistral", "smollm", "smollm2", "tinyllama", "codellama")),
    Family("qwen2", SUPPORTED_DECODER, "Qwen2", "Qwen2ForCausalLM", "qwen2", ("qwen2.5", "qwen25")),
    Family("qwen3", SUPPORTED_DECODER, "Qwen3", "Qwen3ForCausalLM", "qwen3", ()),
    # Decoder families not implemented.
    Family("gpt2", UNSUPPORTED_DECODER, "GPT-2", "GPT2LMHeadModel", "gpt2", ("gpt", "openai-gpt")),
    Family("gpt_neox", UNSUPPORTED_DECODER, "GPT-NeoX", "GPTNeoXForCausalLM", "gpt_neox",
           ("gptneox", "pythia")),
    Family("gptj", UNSUPPORTED_DECODER, "GPT-J", "GPTJForCausalLM", "gptj", ()),
    Family("opt", UNSUPPORTED_DECODER, "OPT", "OPTForCausalLM", "opt", ()),
    Family("gemma", UNSUPPORTED_DECODER, "Gemma", "GemmaForCausalLM", "gemma",
           ("gemma2", "gemma3")),
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

FAMILIES: dict[str, Family] = {f.name: f for f in _FAMILIES}
SUPPORTED = tuple(f.name for f in _FAMILIES if f.kind == SUPPORTED_DECODER)

_HF_SUFFIXES = (
    "forcausallm", "lmheadmodel", "forconditionalgeneration", "formaskedlm",
    "forsequenceclassification", "fortokenclassification", "forquestionanswering",
    "forpretraining", "mtmodel", "model",
)


def _squash(name: str) -> str:
    return re.sub(r"[^a-z0-9.]", "", name.lower())


_LOOKUP: dict[str, str] = {}
for _f in _FAMILIES:
    for _key in (_f.name, _f.display, _f.model_type or "", *(_f.aliases)):
        if _key:
            _LOOKUP.setdefault(_squash(_key), _f.name)
    if _f.hf_architecture:
        _LOOKUP.setdefault(_squash(_f.hf_architecture), _f.name)


def normalize_family(name: str | None) -> str | None:
    """Map any architecture spelling to a canonical family slug, or None if unknown.

    >>> normalize_family("Qwen2ForCausalLM"), normalize_family("qwen2"), normalize_family("Qwen2")
    ('qwen2', 'qwen2', 'qwen2')
    """
    if not name or not isinstance(name, str):
        return None
    key = _squash(name)
    if key in _LOOKUP:
        return _LOOKUP[key]
    for suffix in _HF_SUFFIXES:
        if key.endswith(suffix) and len(key) > len(suffix):
            base = key[: -len(suffix)]
            if base in _LOOKUP:
                return _LOOKUP[base]
    return None


def get_family(name: str | None) -> Family | None:
    slug = normalize_family(name)
    return FAMILIES.get(slug) if slug else None


def is_supported(name: str | None) -> bool:
    fam = get_family(name)
    return fam is not None and fam.kind == SUPPORTED_DECODER


def supported_list() -> str:
    return ", ".join(SUPPORTED)
