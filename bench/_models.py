"""The models and loss functions the throughput bench compares (see train_throughput.py's variants)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from warmstart.arch import CausalLM
from warmstart.arch import loss as loss_mod
from warmstart.train import fp8
from warmstart.train.compile import compile_blocks

# warmstart preset -> litgpt.config.Config.from_name
LITGPT_NAMES = {"smollm2-135m": "SmolLM2-135M", "qwen2.5-0.5b": "Qwen2.5-0.5B", "qwen2.5-1.5b": "Qwen2.5-1.5B",
                "qwen2.5-3b": "Qwen2.5-3B"}


def logits_loss(forward):
    """The loss before issue 12: fp32 logits of B x T x V, then F.cross_entropy."""

    def loss(x, y):
        logits = forward(x)
        return F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), y.reshape(-1))

    return loss


FP8_VARIANTS = {"warmstart-fp8": "tensorwise", "warmstart-fp8-rowwise": "rowwise"}  # --fp8 as pretrain runs it


def warmstart_model(variant: str, cfg, device, act_ckpt: bool, seed: int):
    with torch.device(device):
        model = CausalLM(cfg)
    model.reset_parameters(seed, on_device=True)  # an 8B model's init on the host takes minutes
    model = model.to(dtype=torch.float32).train()
    model.activation_checkpointing = act_ckpt
    if variant in ("warmstart", "warmstart-inductor-ce", "warmstart-eager", *FP8_VARIANTS):
        kernel = "inductor" if variant == "warmstart-inductor-ce" else "triton"
        if variant in FP8_VARIANTS:
            fp8.convert_blocks(model, FP8_VARIANTS[variant], torch.device(device))
        if variant != "warmstart-eager":
            compile_blocks(model)

        def loss(x, y):
            loss_mod.KERNEL["cuda"] = kernel  # the fused loss's per-chunk kernel on CUDA
            return model.loss(x, y)

        return model, loss
    loss = logits_loss(model)
    return model, (torch.compile(loss) if variant == "warmstart-logits" else loss)


def litgpt_model(variant: str, preset: str, device, seq_len: int, act_ckpt: bool):
    from litgpt.config import Config
    from litgpt.model import GPT
    from litgpt.utils import chunked_cross_entropy

    if act_ckpt:
        raise ValueError("the litgpt variants run without activation checkpointing")
    with torch.device(device):
        model = GPT(Config.from_name(LITGPT_NAMES[preset]))
    model.max_seq_length = seq_len
    model = model.to(dtype=torch.float32).train()
    if variant == "litgpt-full":
        return model, torch.compile(logits_loss(model))
    compiled = torch.compile(model)
    return model, lambda x, y: chunked_cross_entropy(compiled(x), y)


def transformers_model(variant: str, cfg, device, act_ckpt: bool):
    """The same shape built by transformers (SDPA attention)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    d = cfg.to_hf_config()
    model_type = d.pop("model_type")
    d.pop("architectures")
    hf = AutoModelForCausalLM.from_config(AutoConfig.for_model(model_type, **d), attn_implementation="sdpa")
    if act_ckpt:
        hf.gradient_checkpointing_enable()
    hf = hf.to(device=device, dtype=torch.float32).train()
    loss = logits_loss(lambda x: hf(input_ids=x).logits)
    return hf, (torch.compile(loss) if variant == "transformers-compile" else loss)


def build_variant(variant: str, preset: str, cfg, *, device, seq_len: int, act_ckpt: bool, seed: int):
    """(model, loss_fn(x, y), parameter count) of one bench variant."""
    if variant.startswith("warmstart"):
        model, loss = warmstart_model(variant, cfg, device, act_ckpt, seed)
    elif variant.startswith("litgpt"):
        model, loss = litgpt_model(variant, preset, device, seq_len, act_ckpt)
    else:
        model, loss = transformers_model(variant, cfg, device, act_ckpt)
    return model, loss, sum(p.numel() for p in model.parameters())
