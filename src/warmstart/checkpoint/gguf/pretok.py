"""GGUF pre-tokenizers: llama.cpp's names (``tokenizer.ggml.pre``) and the ``tokenizers`` pipeline each
stands for, in both directions.

llama.cpp (``src/llama-vocab.cpp``: the name -> ``LLAMA_VOCAB_PRE_TYPE_*`` table in ``llama_vocab::load``
and the regexes of ``llm_tokenizer_bpe``) splits the text with a list of regexes applied in turn, each
cutting every piece into its matches and the text between them, then runs the BPE merges inside each
piece; some types first look a whole piece up in the vocabulary (``ignore_merges``). ``tokenizers`` does
the same with a Sequence of ``Split(regex, "isolated")`` before ``ByteLevel(use_regex=False)`` and
``BPE(ignore_merges=...)``. Where llama.cpp rewrites a model's regex for its std::regex fallback, the
model's own regex (llama.cpp quotes it) is used: ``tokenizers`` runs it as the model's tokenizer.json does.

Reading: every name llama.cpp knows builds its pipeline; any other name is refused (WS120), as llama.cpp
refuses it. Writing: the name is chosen from what the tokenizer does (its splits and ``ignore_merges``);
a tokenizer whose splitting no llama.cpp type reproduces is refused (WS120), never written.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from warmstart.errors import PreTokenizerError

_CONTRACTIONS = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)"
_LOWER = r"[\p{Ll}\p{Lm}\p{Lo}\p{M}]"
_UPPER = r"[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]"
_TAIL = r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"  # punctuation, newlines, whitespace runs

GPT2 = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
LLAMA3 = _CONTRACTIONS + r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}" + _TAIL
QWEN2 = _CONTRACTIONS + r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}" + _TAIL
QWEN35 = (_CONTRACTIONS + r"|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+"
          r"|\s+(?!\S)|\s+")
GPT4O = (rf"[^\r\n\p{{L}}\p{{N}}]?{_UPPER}*{_LOWER}+{_CONTRACTIONS}?"
         rf"|[^\r\n\p{{L}}\p{{N}}]?{_UPPER}+{_LOWER}*{_CONTRACTIONS}?"
         r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+")
TEKKEN = (rf"[^\r\n\p{{L}}\p{{N}}]?{_UPPER}*{_LOWER}+|[^\r\n\p{{L}}\p{{N}}]?{_UPPER}+{_LOWER}*"
          r"|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+")
DIGIT = r"\p{N}"
DIGITS = r"\p{N}+"
DIGITS3 = r"\p{N}{1,3}"
# digit runs cut into groups of three from the right (1234567 -> 1, 234, 567): llama.cpp's splitter for
# AFMoE and Tiny Aya (unicode_regex_split_custom_afmoe)
DIGIT_GROUPS = r"\p{N}{1,3}(?=(?:\p{N}{3})*(?!\p{N}))"
_CJK = "[\u4e00-\u9fa5\u0800-\u4e00\uac00-\ud7ff]+"
_DEEPSEEK3 = (r"[!\"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+|[^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+"
              r"| ?[\p{P}\p{S}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_KANA_HAN = "[\u4e00-\u9fa5\u3040-\u309f\u30a0-\u30ff]+"
_PORO = " ?[^(\\s|.,!?\u2026\u3002\uff0c\u3001\u0964\u06d4\u060c)]+"
_NO_HAN_UPPER = r"[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}&&[^\p{Han}]]"
_NO_HAN_LOWER = r"[\p{Ll}\p{Lm}\p{Lo}\p{M}&&[^\p{Han}]]"
_DEEPSEEK_LLM_LETTERS = (
    "[A-Za-z\u00b5\u00c0-\u00d6\u00d8-\u00f6\u00f8-\u01ba\u01bc-\u01bf\u01c4-\u0293\u0295-\u02af\u0370-\u0373"
    "\u0376\u0377\u037b-\u037d\u037f\u0386\u0388-\u038a\u038c\u038e-\u03a1\u03a3-\u03f5\u03f7-\u0481"
    "\u048a-\u052f\u0531-\u0556\u10a0-\u10c5\u13a0-\u13f5\u13f8-\u13fd\u1c90-\u1cba\u1cbd-\u1cbf"
    "\u1d00-\u1d2b\u1d6b-\u1d77\u1d79-\u1d9a\u1e00-\u1f15\u1f18-\u1f1d\u1f20-\u1f45\u1f48-\u1f4d"
    "\u1f50-\u1f57\u1f59\u1f5b\u1f5d\u1f5f-\u1f7d\u1f80-\u1fb4\u1fb6-\u1fbc\u1fbe\u1fc2-\u1fc4"
    "\u1fc6-\u1fcc\u1fd0-\u1fd3\u1fd6-\u1fdb\u1fe0-\u1fec\u1ff2-\u1ff4\u1ff6-\u1ffc\u2102\u2107"
    "\u210a-\u2113\u2115\u2119-\u211d\u2124\u2126\u2128\u212a-\u212d\u212f-\u2134\u2139\u213c-\u213f"
    "\u2145-\u2149\u214e\u2183\u2184\u2c00-\u2c7b\u2c7e-\u2ce4\u2ceb-\u2cee\u2cf2\u2cf3\ua640-\ua66d"
    "\ua680-\ua69b\ua722-\ua76f\ua771-\ua787\ua78b-\ua78e\uab70-\uabbf\ufb00-\ufb06\ufb13-\ufb17"
    "\uff21-\uff3a\uff41-\uff5a\U00010400-\U0001044f\U000104b0-\U000104d3\U000104d8-\U000104fb"
    "\U00010c80-\U00010cb2\U00010cc0-\U00010cf2\U000118a0-\U000118df\U0001e900-\U0001e943]+"
)


@dataclass(frozen=True)
class PreTokenizer:
    """One llama.cpp pre-tokenizer type: its names (the first is the one warmstart writes), the regexes
    applied in turn, and whether a piece found whole in the vocabulary is one token (``ignore_merges``)."""

    names: tuple[str, ...]
    splits: tuple[str, ...]
    ignore_merges: bool = False

    @property
    def name(self) -> str:
        return self.names[0]


# llama.cpp's types in the order warmstart prefers a name when several behave alike (the first match
# wins on export; a source GGUF's own name is kept when it behaves the same). Types that differ only in
# how llama.cpp detokenizes (clean_spaces) or which special tokens it adds share the pipeline.
PRE_TOKENIZERS: tuple[PreTokenizer, ...] = (
    PreTokenizer(("gpt-2", "mpt", "olmo", "jais", "trillion", "granite-docling", "phi-2", "jina-es", "jina-de",
                  "gigachat", "jina-v2-es", "jina-v2-de", "a.x-4.0", "mellum", "modern-bert", "jina-v1-en",
                  "jina-v2-code", "roberta-bpe", "exaone4"), (GPT2,)),
    PreTokenizer(("smollm", "starcoder", "refact", "command-r", "codeshell", "exaone", "minerva-7b", "mellum2"),
                 (DIGIT, GPT2)),
    PreTokenizer(("llama-bpe", "llama3", "llama-v3", "falcon3", "falcon-h1", "pixtral", "midm-2.0", "lfm2",
                  "jina-v5-nano", "glm4", "glm5"), (LLAMA3,), ignore_merges=True),
    PreTokenizer(("dbrx", "smaug-bpe", "chatglm-bpe"), (LLAMA3,)),
    PreTokenizer(("qwen2", "deepseek-r1-qwen", "kormo", "f2llmv2", "megrez", "stablelm2", "hunyuan", "solar-open",
                  "grok-2"), (QWEN2,)),
    PreTokenizer(("qwen35",), (QWEN35,)),
    PreTokenizer(("gpt-4o", "llama4", "kanana2", "talkie", "minimax-m2"), (GPT4O,)),
    PreTokenizer(("tekken",), (TEKKEN,), ignore_merges=True),
    PreTokenizer(("deepseek-coder",), ("[\r\n]", r"\s?\p{L}+", r"\s?\p{P}+", _CJK, DIGIT)),
    PreTokenizer(("deepseek-llm",), ("[\r\n]", r"\s?" + _DEEPSEEK_LLM_LETTERS,
                                     "\\s?[!-/:-~\uff01-\uff0f\uff1a-\uff5e\u2018-\u201f\u3000-\u3002]+",
                                     r"\s+$", _CJK, DIGITS)),
    PreTokenizer(("deepseek-v3", "hunyuan-dense", "hy_v4", "joyai-llm"), (DIGITS3, _KANA_HAN, _DEEPSEEK3)),
    PreTokenizer(("spark2_5",), (DIGITS3, _KANA_HAN, _DEEPSEEK3.replace(r"[\r\n]*|\s*[\r\n]+|", r"|[\r\n]|"), DIGIT)),
    PreTokenizer(("falcon",), (r"[\p{P}\$\+<=>\^~\|`]+", GPT2, "[0-9][0-9][0-9]")),
    PreTokenizer(("default",), (r"[\p{P}\$\+<=>\^~\|]+", GPT2, DIGITS, "[0-9][0-9][0-9]")),
    PreTokenizer(("poro-chat", "bloom", "gpt3-finnish"), (_PORO,)),
    PreTokenizer(("viking",), (_PORO, DIGIT)),
    PreTokenizer(("jais-2",), (_CONTRACTIONS + r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                               r"|\s*[\r\n]+|\s{512}(?!\S)|\s{256}(?!\S)|\s{128}(?!\S)|\s{64}(?!\S)|\s{32}(?!\S)"
                               r"|\s{16}(?!\S)|\s{8}(?!\S)|\s{4}(?!\S)|\s{1,2}(?!\S)|\s{1}",)),
    PreTokenizer(("chameleon",), ("<sentinel:[0-9]+>", "(IMGIMG)((A|B|C|D|E|F|G|H|I){1,4})Z", "([\\t\\n]|    |  )",
                                  DIGIT, r"[\p{P}!-/:-@\[-`{-~]", GPT2)),
    PreTokenizer(("granite-embed-multi-97m",), (
        r"[^\r\n\p{L}\p{N}]?((?=[\p{L}\p{M}])([^a-z]))*((?=[\p{L}\p{M}])([^A-Z]))+(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]"
        r"|'[mM]|'[lL][lL]|'[dD])?|[^\r\n\p{L}\p{N}]?((?=[\p{L}\p{M}])([^a-z]))+((?=[\p{L}\p{M}])([^A-Z]))*"
        r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*"
        r"|\s*[\r\n]+|\s+(?!\S)|\s+",), ignore_merges=True),
    PreTokenizer(("tiny_aya", "cohere2moe"), (DIGIT_GROUPS, GPT4O)),
    PreTokenizer(("kimi-k2",), (
        rf"[\p{{Han}}]+|[^\r\n\p{{L}}\p{{N}}]?{_NO_HAN_UPPER}*{_NO_HAN_LOWER}+{_CONTRACTIONS}?"
        rf"|[^\r\n\p{{L}}\p{{N}}]?{_NO_HAN_UPPER}+{_NO_HAN_LOWER}*{_CONTRACTIONS}?"
        r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",)),
    PreTokenizer(("superbpe",), (DIGITS, r"(?=(\d{3})+(?!\d))")),
    PreTokenizer(("bailingmoe", "bailingmoe2", "llada-moe"), (
        r"'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]++[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+",)),
    PreTokenizer(("seed-coder",), (_CONTRACTIONS + r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1}| ?[^\s\p{L}\p{N}\r\n]+"
                                   r"|\s*[\r\n]+|\s+(?!\S)|\s+",)),
    PreTokenizer(("ufakzeka",), (r"[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}" + _TAIL,)),
    PreTokenizer(("afmoe",), (DIGIT_GROUPS, "[\u4e00-\u9fff\u3400-\u4dbf\uf900-\ufaff\u3040-\u309f\u30a0-\u30ff"
                              "\uff65-\uff9f\u2f00-\u2fdf\u0e00-\u0e7f\u0e80-\u0eff\u1780-\u17ff\u1000-\u109f"
                              "\uaa60-\uaa7f\ua9e0-\ua9ff\uac00-\ud7af\u1100-\u11ff]+",
                              _DEEPSEEK3)),
    PreTokenizer(("laguna",), ("[^\\n]+|[\\n]+", QWEN2)),
    PreTokenizer(("exaone-moe",), (_CONTRACTIONS + r"|[^\r\n\p{L}\p{N}]?(?:\p{L}\p{M}*(?: \p{L}\p{M}*)*)+|\p{N}"
                                   r"| ?[^\s\p{L}\p{N}]+[\r\n/]?|\s*[\r\n]|\s+(?!\S)|\s+",)),
    PreTokenizer(("minicpm5",), (DIGITS3, _CONTRACTIONS + r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}+" + _TAIL),
                 ignore_merges=True),
    PreTokenizer(("youtu",), (
        "[\uac00-\ud7a3\u3131-\u318e]+|[\uff01\u2026\u201c\u201d\u2018\u2019\u2014\uff1a\uff1b\uff0c\u3001"
        "\u3000-\u303f\ufe30-\ufe4f]+|[\u3105-\u312f]+|[\u4e00-\u9fa5\u3040-\u309f\u30a0-\u30ff]+",
        rf"[^\r\n\p{{L}}\p{{N}}]?{_UPPER}*{_LOWER}+{_CONTRACTIONS}?|[^\r\n\p{{L}}\p{{N}}]?{_UPPER}+{_LOWER}*"
        rf"{_CONTRACTIONS}?|\p{{N}}| ?[^\s\p{{L}}\p{{N}}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"), ignore_merges=True),
)
BY_NAME = {name: pre for pre in PRE_TOKENIZERS for name in pre.names}
# llama.cpp names whose BPE runs on raw UTF-8 rather than GPT-2's byte alphabet (byte_encode = false):
# a vocabulary of another spelling, not a split warmstart reproduces on byte-level tokens.
RAW_UTF8_NAMES = ("gemma4", "granite-embed-multi-311m", "sarvam-moe", "whitespace")


def pre_tokenizer(name, *, path=None) -> PreTokenizer:
    """The type ``tokenizer.ggml.pre`` names (a missing or empty one is llama.cpp's "default")."""
    if name is None or name == "":
        return BY_NAME["default"]
    found = BY_NAME.get(name) if isinstance(name, str) else None
    if found is None:
        why = ("llama.cpp runs this type's BPE on raw UTF-8, not on GPT-2's byte alphabet" if name in RAW_UTF8_NAMES
               else "llama.cpp refuses a name it does not know, and warmstart will not guess the split regex")
        raise PreTokenizerError(f"the GGUF's byte-level tokenizer names the pre-tokenizer {name!r}, which warmstart "
                                "cannot build", why=why, fix="pass the model's tokenizer.json with --tokenizer",
                                path=path)
    return found


def build_pre_tokenizer(pre: PreTokenizer):
    """The ``tokenizers`` pre-tokenizer of a type: its regex splits in turn, then GPT-2's byte alphabet."""
    from tokenizers import Regex, pre_tokenizers

    return pre_tokenizers.Sequence([*(pre_tokenizers.Split(Regex(r), behavior="isolated") for r in pre.splits),
                                    pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])


# ------------------------------------------------------------------- writing

def _splits(node: dict | None) -> tuple[str, ...] | None:
    """The regexes a tokenizer.json pre_tokenizer applies in turn (as llama.cpp's lists spell them), or None
    when one step is not a plain split llama.cpp can express (a prefix space, another split behaviour, ...)."""
    if not node:
        return ()
    kind = node.get("type")
    if kind == "Sequence":
        parts = [_splits(p) for p in node.get("pretokenizers") or []]
        return None if any(p is None for p in parts) else tuple(r for p in parts for r in p)
    if kind == "ByteLevel":
        return None if node.get("add_prefix_space") else ((GPT2,) if node.get("use_regex", True) else ())
    if kind == "Digits":
        return (DIGIT,) if node.get("individual_digits") else (DIGITS,)
    if kind == "Punctuation" and node.get("behavior") == "Contiguous":
        return (r"[\p{P}\$\+<=>\^~\|`]+",)
    pattern = node.get("pattern") or {}
    if kind == "Split" and node.get("behavior") == "Isolated" and not node.get("invert") and "Regex" in pattern:
        return (pattern["Regex"],)
    return None


def _ends_byte_level(node: dict | None) -> bool:
    """Whether the pre-tokenizer spells the pieces in GPT-2's byte alphabet (a ByteLevel step, last)."""
    last = (node.get("pretokenizers") or [{}])[-1] if (node or {}).get("type") == "Sequence" else node
    return (last or {}).get("type") == "ByteLevel"


def _adapted(regex: str) -> str:
    """llama.cpp's std::regex spelling of a case-insensitive contraction group, read as the original."""
    return regex.replace("(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])", _CONTRACTIONS)


def llama_cpp_pre_name(tokenizer, declared: str | None = None) -> str:
    """tokenizer.ggml.pre for a byte-level BPE ``tokenizers.Tokenizer``: the source GGUF's own name
    (``declared``) when it behaves the same, else the first type in ``PRE_TOKENIZERS`` that does.

    Raises WS120 when no llama.cpp type splits the text as this tokenizer does."""
    tok_json = json.loads(tokenizer.to_str())
    node, model = tok_json.get("pre_tokenizer"), tok_json.get("model") or {}
    splits = _splits(node)
    norm = (tok_json.get("normalizer") or {}).get("type")
    if splits is not None and _ends_byte_level(node) and norm in (None, "NFC"):
        shape = (tuple(_adapted(r) for r in splits), bool(model.get("ignore_merges")))
        found = [p for p in PRE_TOKENIZERS if (tuple(map(_adapted, p.splits)), p.ignore_merges) == shape]
        for pre in found:
            return declared if declared in pre.names else pre.name
    raise PreTokenizerError(
        "the tokenizer's pre-tokenizer (" + _describe(node, tok_json.get("normalizer"), model) + ") splits text in a "
        "way no llama.cpp pre-tokenizer type reproduces",
        why="llama.cpp would tokenize the GGUF differently from the model's own tokenizer, so nothing was written",
        fix="export with --to hf or --to safetensors, which keep tokenizer.json as it is")


def _describe(node, normalizer, model) -> str:
    text = json.dumps(node, ensure_ascii=False)
    text = text if len(text) <= 160 else text[:157] + "..."
    extra = f"; normalizer {normalizer.get('type')}" if normalizer else ""
    return text + extra + ("; ignore_merges" if model.get("ignore_merges") else "")


__all__ = ["BY_NAME", "PRE_TOKENIZERS", "PreTokenizer", "build_pre_tokenizer", "llama_cpp_pre_name",
           "pre_tokenizer"]
