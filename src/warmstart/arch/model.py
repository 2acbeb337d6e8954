"""One decoder-only transformer for every supported family, with Hugging Face parameter names.

Per layer: RMSNorm -> attention (RoPE, GQA via SDPA) -> residual -> RMSNorm -> gated MLP ->
residual; then a final RMSNorm and the LM head (tied to the embedding or not). What families
change is a ``ModelConfig`` field, never an ``if family``: q/k/v and o biases, per-head q/k RMSNorm,
a sliding window per layer (with its own RoPE base), the attention scale, the MLP activation,
"sandwich" norms after each sublayer too, Gemma's (1 + w) norm weights and sqrt(hidden) embedding
scale. ``state_dict()`` keys are exactly HF's, so a HF checkpoint maps one-to-one. No Python loops
over heads or tokens; no host syncs.
"""

from __future__ import annotations

import math
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from warmstart.arch.attention import DOCUMENT, Packing, document_ids, document_masks, document_positions, \
    masked_attention
from warmstart.arch.config import SLIDING, ModelConfig
from warmstart.arch.loss import linear_cross_entropy

ACTIVATIONS = {"silu": F.silu, "gelu_pytorch_tanh": partial(F.gelu, approximate="tanh")}


class RMSNorm(nn.Module):
    """HF-exact RMSNorm: normalise in fp32, then scale by ``w`` after casting back (Llama), or by
    ``offset + w`` before casting back (Gemma's (1 + w), ``offset=1``). Starts as the identity."""

    def __init__(self, dim: int, eps: float, offset: float = 0.0) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.full((dim,), 1.0 - offset))
        self.eps = eps
        self.offset = offset

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        if self.offset:
            return (h * (self.offset + self.weight.float())).to(x.dtype)
        return self.weight * h.to(x.dtype)


def rope_type(scaling: dict | None) -> str:
    """The rope_scaling type (``default`` without one)."""
    return (scaling or {}).get("rope_type", (scaling or {}).get("type", "default"))


def rope_inv_freq(head_dim: int, theta: float, scaling: dict | None = None) -> torch.Tensor:
    """RoPE inverse frequencies as transformers computes them: default, linear, llama3 or yarn scaling."""
    dim = head_dim
    inv_freq = 1.0 / (theta ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))
    rs, kind = scaling, rope_type(scaling)
    if kind == "linear":  # positions divided by the factor
        return inv_freq / rs["factor"]
    if kind == "yarn":
        return _yarn_inv_freq(inv_freq, dim, theta, rs)
    if kind == "llama3":
        factor = rs["factor"]
        low, high = rs.get("low_freq_factor", 1.0), rs.get("high_freq_factor", 4.0)
        old_ctx = rs["original_max_position_embeddings"]
        low_wl, high_wl = old_ctx / low, old_ctx / high
        wavelen = 2 * math.pi / inv_freq
        scaled = torch.where(wavelen > low_wl, inv_freq / factor, inv_freq)
        smooth = (old_ctx / wavelen - low) / (high - low)
        smoothed = (1 - smooth) * scaled / factor + smooth * scaled
        medium = ~(wavelen < high_wl) & ~(wavelen > low_wl)
        inv_freq = torch.where(medium, smoothed, scaled)
    return inv_freq


def _yarn_inv_freq(inv_freq: torch.Tensor, dim: int, theta: float, rs: dict) -> torch.Tensor:
    """YaRN: frequencies that turn fewer than ``beta_slow`` times over the original context are
    interpolated (divided by the factor), those turning more than ``beta_fast`` times kept, a linear
    ramp between (transformers' ``_compute_yarn_parameters``)."""
    factor, old_ctx = rs["factor"], rs["original_max_position_embeddings"]
    beta_fast, beta_slow = rs.get("beta_fast") or 32, rs.get("beta_slow") or 1

    def correction_dim(rotations: float) -> float:
        return dim * math.log(old_ctx / (rotations * 2 * math.pi)) / (2 * math.log(theta))

    low, high = correction_dim(beta_fast), correction_dim(beta_slow)
    if rs.get("truncate", True):
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, dim - 1)
    high = high + 0.001 if low == high else high
    ramp = torch.clamp((torch.arange(dim // 2, dtype=torch.float32) - low) / (high - low), 0, 1)
    keep = 1 - ramp
    return inv_freq / factor * (1 - keep) + inv_freq * keep


def rope_attention_factor(scaling: dict | None) -> float:
    """What cos and sin are multiplied by: YaRN's attention factor (``0.1 ln(factor) + 1`` unless given), else 1."""
    if rope_type(scaling) != "yarn":
        return 1.0
    if scaling.get("attention_factor") is not None:
        return float(scaling["attention_factor"])
    factor = scaling["factor"]

    def mscale(m: float = 1.0) -> float:
        return 1.0 if factor <= 1 else 0.1 * m * math.log(factor) + 1.0

    if scaling.get("mscale") and scaling.get("mscale_all_dim"):
        return mscale(scaling["mscale"]) / mscale(scaling["mscale_all_dim"])
    return mscale()


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    return x * cos + rotate_half(x) * sin


class KVCache:
    """Preallocated per-layer key/value buffers for generation."""

    def __init__(self, cfg: ModelConfig, batch: int, max_len: int, device, dtype) -> None:
        shape = (batch, cfg.num_kv_heads, max_len, cfg.head_dim)
        self.k = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(cfg.num_layers)]
        self.v = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(cfg.num_layers)]
        self.pos = 0
        self.max_len = max_len

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store the keys/values of the new positions; return those of every position so far."""
        end = self.pos + k.shape[2]
        self.k[layer][:, :, self.pos : end] = k.to(self.k[layer].dtype)
        self.v[layer][:, :, self.pos : end] = v.to(self.v[layer].dtype)
        return self.k[layer][:, :, :end].to(k.dtype), self.v[layer][:, :, :end].to(v.dtype)


def causal_mask(T: int, S: int, window: int | None, device) -> torch.Tensor:
    """[T, S] bool: the query at position S - T + i sees key j if j <= its position and, with a
    sliding window, j > its position - window (``window`` keys, its own included)."""
    pos = torch.arange(S - T, S, device=device)[:, None]
    key = torch.arange(S, device=device)[None, :]
    seen = key <= pos
    return seen if window is None else seen & (key > pos - window)


def attend(q, k, v, window: int | None, scale: float | None) -> torch.Tensor:
    """Causal attention of the last T positions over all S keys (S > T after a KV cache's past)."""
    T, S = q.shape[2], k.shape[2]
    gqa = q.shape[1] != k.shape[1]
    if window is None and T == S:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale, enable_gqa=gqa)
    mask = None if window is None and T == 1 else causal_mask(T, S, window, q.device)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale, enable_gqa=gqa)


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig, layer_idx: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.layer_idx = layer_idx
        h, d = cfg.hidden_size, cfg.head_dim
        self.n_heads, self.n_kv = cfg.num_heads, cfg.num_kv_heads
        self.head_dim = d
        self.q_proj = nn.Linear(h, self.n_heads * d, bias=cfg.attention_bias)
        self.k_proj = nn.Linear(h, self.n_kv * d, bias=cfg.attention_bias)
        self.v_proj = nn.Linear(h, self.n_kv * d, bias=cfg.attention_bias)
        self.o_proj = nn.Linear(self.n_heads * d, h, bias=cfg.o_bias)
        if cfg.qk_norm:
            self.q_norm = RMSNorm(d, cfg.rms_norm_eps, cfg.norm_weight_offset)
            self.k_norm = RMSNorm(d, cfg.rms_norm_eps, cfg.norm_weight_offset)
        self.window = cfg.sliding_window if cfg.layer_type(layer_idx) == SLIDING else None
        # None: SDPA's 1/sqrt(head_dim)
        self.scale = cfg.query_pre_attn_scalar ** -0.5 if cfg.query_pre_attn_scalar else None

    def forward(self, x, cos, sin, cache: KVCache | None = None, mask=None) -> torch.Tensor:
        """``mask``: this batch's document mask for this layer's window (``arch/attention.py``), or None
        for causal attention over the window."""
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.n_heads, self.head_dim)
        k = self.k_proj(x).view(B, T, self.n_kv, self.head_dim)
        v = self.v_proj(x).view(B, T, self.n_kv, self.head_dim)
        if self.cfg.qk_norm:
            q, k = self.q_norm(q), self.k_norm(k)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if cache is not None:
            k, v = cache.update(self.layer_idx, k, v)
        y = attend(q, k, v, self.window, self.scale) if mask is None else masked_attention(q, k, v, mask, self.scale)
        y = y.transpose(1, 2).reshape(B, T, self.n_heads * self.head_dim)
        return self.o_proj(y)


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.up_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.down_proj = nn.Linear(cfg.intermediate_size, cfg.hidden_size, bias=False)
        self.act = ACTIVATIONS[cfg.hidden_act]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(self.act(self.gate_proj(x)) * self.up_proj(x))


class DecoderLayer(nn.Module):
    def __init__(self, cfg: ModelConfig, layer_idx: int) -> None:
        super().__init__()
        norm = partial(RMSNorm, cfg.hidden_size, cfg.rms_norm_eps, cfg.norm_weight_offset)
        self.input_layernorm = norm()
        self.self_attn = Attention(cfg, layer_idx)
        self.post_attention_layernorm = norm()  # pre-norm: before the MLP; sandwich: after attention
        self.mlp = MLP(cfg)
        self.sandwich = cfg.norm_style == "sandwich"
        if self.sandwich:
            self.pre_feedforward_layernorm = norm()
            self.post_feedforward_layernorm = norm()

    def forward(self, x, cos, sin, cache=None, mask=None):
        if self.sandwich:
            x = x + self.post_attention_layernorm(self.self_attn(self.input_layernorm(x), cos, sin, cache, mask))
            return x + self.post_feedforward_layernorm(self.mlp(self.pre_feedforward_layernorm(x)))
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, cache, mask)
        return x + self.mlp(self.post_attention_layernorm(x))


class Backbone(nn.Module):
    """``model.*`` in HF naming."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(cfg, i) for i in range(cfg.num_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, cfg.norm_weight_offset)


class CausalLM(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.model = Backbone(cfg)
        self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        if cfg.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight
        self.reset_rope()
        self.activation_checkpointing = False
        self.packing = Packing()  # how packed windows are read (arch/attention.py): a run's setting, not saved

    # ------------------------------------------------------------------ init
    def reset_parameters(self, seed: int | None = None, *, on_device: bool = False) -> None:
        """Scratch init (HF-style normal(0, initializer_range), norms the identity); drawn on the host, the same
        values on every device, unless ``on_device`` (the parameters' device: the benches' 8B models)."""
        gen = torch.Generator(device=next(self.parameters()).device if on_device else "cpu")
        if seed is not None:
            gen.manual_seed(seed)
        std = self.cfg.initializer_range
        with torch.no_grad():
            for name, p in self.named_parameters():
                if name.endswith("norm.weight"):
                    p.fill_(1.0 - self.cfg.norm_weight_offset)
                elif name.endswith(".bias"):
                    p.zero_()
                else:
                    p.copy_(torch.randn(p.shape, generator=gen, device=gen.device) * std)

    # ------------------------------------------------------------------ rope
    def reset_rope(self, device=None) -> None:
        """(Re)compute the rotary inverse frequencies: buffers, never saved, so a model built on the
        meta device and moved with ``to_empty`` needs this. Sliding layers may have their own base."""
        cfg = self.cfg
        inv_freq = rope_inv_freq(cfg.head_dim, cfg.rope_theta, cfg.rope_scaling)
        local = inv_freq if cfg.rope_local_theta is None else rope_inv_freq(cfg.head_dim, cfg.rope_local_theta)
        self.register_buffer("inv_freq", inv_freq.to(device), persistent=False)
        self.register_buffer("inv_freq_local", local.to(device), persistent=False)

    def rope(self, positions: torch.Tensor, dtype: torch.dtype, inv_freq: torch.Tensor, factor: float = 1.0):
        """cos, sin of ``positions``: [T] -> [T, D]; per-row positions [B, T] -> [B, 1, T, D]."""
        freqs = positions.float()[..., None] * inv_freq.float()
        emb = torch.cat((freqs, freqs), dim=-1)
        if positions.dim() == 2:
            emb = emb[:, None]
        if factor != 1.0:
            return (emb.cos() * factor).to(dtype), (emb.sin() * factor).to(dtype)
        return emb.cos().to(dtype), emb.sin().to(dtype)

    # ---------------------------------------------------------------- forward
    def forward(self, input_ids: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        """Logits [B, T, V] (fp32 when the model is fp32)."""
        return self.lm_head(self.hidden_states(input_ids, cache))

    def hidden_states(self, input_ids: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        B, T = input_ids.shape
        start = cache.pos if cache is not None else 0
        x = self.model.embed_tokens(input_ids)
        if self.cfg.embedding_scale == "sqrt_hidden":  # Gemma: the scale rounded to the weights' dtype
            x = x * torch.tensor(self.cfg.hidden_size**0.5).to(x.dtype)
        positions, masks = self._packed(input_ids) if cache is None else (None, {})
        if positions is None:
            positions = torch.arange(start, start + T, device=input_ids.device)
        dtype = x.dtype
        if torch.is_autocast_enabled(x.device.type):
            dtype = torch.get_autocast_dtype(x.device.type)
        factor = rope_attention_factor(self.cfg.rope_scaling)
        rope = self.rope(positions, dtype, self.inv_freq, factor)
        rope_local = rope if self.cfg.rope_local_theta is None else self.rope(positions, dtype, self.inv_freq_local)
        for layer in self.model.layers:
            window = layer.self_attn.window
            cos, sin = rope_local if window is not None else rope
            mask = masks.get(window)
            if self.activation_checkpointing and self.training and cache is None:
                x = torch.utils.checkpoint.checkpoint(layer, x, cos, sin, None, mask, use_reentrant=False)
            else:
                x = layer(x, cos, sin, cache, mask)
        if cache is not None:
            cache.pos += T
        return self.model.norm(x)

    def _packed(self, input_ids: torch.Tensor) -> tuple[torch.Tensor | None, dict]:
        """This batch's per-document RoPE positions (None: the window's) and document masks ({} : causal),
        as ``self.packing`` says; computed once per batch on the device."""
        packing = self.packing
        if not packing.per_document:
            return None, {}
        docs = document_ids(input_ids, packing.separator)
        positions = document_positions(docs) if packing.positions == DOCUMENT else None
        if packing.attention != DOCUMENT:
            return positions, {}
        return positions, document_masks(docs, {layer.self_attn.window for layer in self.model.layers})

    def loss(self, input_ids: torch.Tensor, targets: torch.Tensor, ignore_index: int = -100) -> torch.Tensor:
        """Mean next-token cross-entropy; ``targets`` are already shifted. The LM head is fused into the
        loss (``arch/loss.py``): the same value and gradients as cross-entropy on ``forward``'s logits,
        without holding them."""
        h = self.hidden_states(input_ids)
        return linear_cross_entropy(h.flatten(0, 1), self.lm_head.weight, targets.reshape(-1), ignore_index)

    # --------------------------------------------------------------- helpers
    def canonical_state_dict(self) -> dict[str, torch.Tensor]:
        """HF-named tensors to save: ``lm_head.weight`` dropped when tied."""
        sd = self.state_dict()
        if self.cfg.tie_word_embeddings:
            sd.pop("lm_head.weight", None)
        return sd

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    @torch.no_grad()
    def generate(
        self,
        input_ids: torch.Tensor,
        max_new_tokens: int,
        *,
        temperature: float = 0.0,
        top_p: float = 1.0,
        eos_token_id: int | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Sample with a KV cache. temperature 0 = greedy. Returns prompt + new ids."""
        B, T = input_ids.shape
        dtype = next(self.parameters()).dtype
        cache = KVCache(self.cfg, B, T + max_new_tokens, input_ids.device, dtype)
        out = input_ids
        logits = self.forward(input_ids, cache)[:, -1, :]
        done = torch.zeros(B, dtype=torch.bool, device=input_ids.device)
        for _ in range(max_new_tokens):
            nxt = sample_next(logits.float(), temperature, top_p, generator)
            if eos_token_id is not None:
                nxt = torch.where(done, torch.full_like(nxt, eos_token_id), nxt)
                done |= nxt == eos_token_id
            out = torch.cat([out, nxt[:, None]], dim=1)
            if eos_token_id is not None and bool(done.all()):
                break
            logits = self.forward(nxt[:, None], cache)[:, -1, :]
        return out


def sample_next(logits: torch.Tensor, temperature: float, top_p: float, generator=None) -> torch.Tensor:
    if temperature <= 0:
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits / temperature, dim=-1)
    if top_p < 1.0:
        sorted_p, idx = probs.sort(dim=-1, descending=True)
        cum = sorted_p.cumsum(dim=-1)
        sorted_p = sorted_p.masked_fill(cum - sorted_p > top_p, 0.0)
        choice = torch.multinomial(sorted_p / sorted_p.sum(-1, keepdim=True), 1, generator=generator)
        return idx.gather(-1, choice).squeeze(-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)
