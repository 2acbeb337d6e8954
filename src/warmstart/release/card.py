"""`warmstart card`: a Hugging Face model card from a checkpoint's metadata and its run log.

YAML front matter: license, base_model (warm starts: warmstart.json parent), datasets, tags,
library_name, pipeline_tag, model-index (val_loss and perplexity). Sections: intended use and
limits, training procedure (the run's config.yaml when the checkpoint sits in a run directory),
loss trajectory (metrics.jsonl), evaluation sets (warmstart.json ``eval_sets``: each ``--eval-data`` set's
loss at step 0 and at save, the forgetting report), data (with a mixture's weights and tokens drawn,
warmstart.json ``data_mixture``), how to use (transformers), reproduce.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import yaml

from warmstart.checkpoint import lineage_hash, load_checkpoint, provenance
from warmstart.checkpoint.formats import FORMAT_GGUF
from warmstart.checkpoint.run import RunDir, find_run
from warmstart.errors import UsageError, WarmstartError


def loss_table(rows: list[dict], max_rows: int = 20) -> str:
    evals = [r for r in rows if isinstance(r.get("val_loss"), (int, float))]
    train = {r["step"]: r for r in rows if isinstance(r.get("loss"), (int, float)) and "step" in r}
    if not evals and not train:
        return "_No metrics log (metrics.jsonl) was found beside this checkpoint._\n"
    if evals:
        pick = evals if len(evals) <= max_rows else [evals[round(i * (len(evals) - 1) / (max_rows - 1))]
                                                     for i in range(max_rows)]
        lines = ["| step | tokens seen | train loss | val loss | val perplexity |",
                 "|---:|---:|---:|---:|---:|"]
        train_steps = sorted(train)
        for r in pick:
            st = r.get("step", 0)
            near = max((s for s in train_steps if s <= st), default=None)
            tl = f"{train[near]['loss']:.4f}" if near is not None else "–"
            vl = float(r["val_loss"])
            ppl = f"{math.exp(vl):.2f}" if vl < 50 else "inf"
            lines.append(f"| {st} | {r.get('tokens_seen', '–')} | {tl} | {vl:.4f} | {ppl} |")
        return "\n".join(lines) + "\n"
    steps = sorted(train)
    pick = steps if len(steps) <= max_rows else [steps[round(i * (len(steps) - 1) / (max_rows - 1))]
                                                 for i in range(max_rows)]
    lines = ["| step | tokens seen | train loss | lr |", "|---:|---:|---:|---:|"]
    for s in pick:
        r = train[s]
        lines.append(f"| {s} | {r.get('tokens_seen', '–')} | {r['loss']:.4f} | {r.get('lr', '–')} |")
    return "\n".join(lines) + "\n"


def _loss(x: Any) -> str:
    return f"{x:.4f}" if isinstance(x, (int, float)) else "–"


def eval_sets_section(eval_sets: Any) -> list[str]:
    """The forgetting report: each extra validation set's loss at step 0, at save, and the change."""
    if not isinstance(eval_sets, dict) or not eval_sets:
        return []
    lines = ["## Evaluation sets\n",
             "Loss on each extra validation set (`--eval-data`) before the first step and when this checkpoint "
             "was saved. On a set the model should keep (retain) a rise is forgetting; on the new domain "
             "(target) a fall is learning.\n",
             "| set | loss at step 0 | loss at save | change |", "|---|---:|---:|---:|"]
    for name, r in eval_sets.items():
        r = r if isinstance(r, dict) else {}
        change = r.get("change")
        lines.append(f"| {name} | {_loss(r.get('step0'))} | {_loss(r.get('final'))} | "
                     + (f"{change:+.4f}" if isinstance(change, (int, float)) else "–") + " |")
    return lines + [""]


def mixture_section(mixture: Any) -> list[str]:
    """A weighted mixture's sources with their weights and the training tokens drawn from each."""
    if not isinstance(mixture, list) or not mixture:
        return []
    lines = ["\nThe training data was a weighted mixture (weights are shares of training tokens):\n",
             "| source | weight | tokens drawn |", "|---|---:|---:|"]
    for m in (m for m in mixture if isinstance(m, dict)):
        lines.append(f"| `{m.get('source')}` | {m.get('weight')} | {m.get('tokens_drawn', '–')} |")
    return lines + [""]


def build_card(ckpt_path: str | Path, *, ckpt=None) -> str:
    ckpt = ckpt or load_checkpoint(ckpt_path)
    c = _card_facts(ckpt)
    parts = ["---", yaml.safe_dump(_front_matter(c), sort_keys=False, allow_unicode=True).rstrip(), "---", ""]
    parts.append(f"# {c['name']}\n")
    parts += _description(ckpt, c)
    parts.append("## Intended use and limits\n")
    parts.append("A base (not instruction-tuned) causal language model for research and for further "
                 "fine-tuning: text and code continuation, perplexity scoring. It has not been aligned or "
                 "evaluated for safety; it can produce incorrect, biased or offensive text and must not be used "
                 "for decisions about people. Its knowledge is limited to its training data"
                 + (f" ({', '.join(map(str, c['sources']))})" if c["sources"] else "") + ".\n")
    parts += _training_procedure(ckpt, c)
    parts.append("## Loss trajectory\n")
    parts.append(loss_table(c["rows"]))
    parts += eval_sets_section(c["prov"].get("eval_sets"))
    parts.append("## Data\n")
    if c["sources"]:
        parts.append("Training data: " + ", ".join(f"`{s}`" for s in c["sources"]) + ".")
    else:
        parts.append("Training data: not recorded.")
    parts += mixture_section(c["prov"].get("data_mixture"))
    parts.append(f"Data license: {c['prov'].get('data_license') or 'not recorded'}.\n")
    parts += _how_to_use(ckpt)
    parts += _reproduce(c)
    return "\n".join(parts).rstrip() + "\n"


def _card_facts(ckpt) -> dict[str, Any]:
    """What the card says, gathered once: provenance, config, run directory, metrics, names."""
    root = Path(getattr(ckpt, "root", ckpt.path))
    prov = provenance(ckpt)
    try:
        cfg = ckpt.model_config()
    except WarmstartError:  # a card can still be written
        cfg = None
    run = find_run(ckpt.path) or find_run(root)
    run_dir = run.path if run is not None else None
    run_cfg, rows = _run_files(run)
    name = (run_dir.name + "-" + root.name) if run_dir is not None and root != run_dir else root.name
    parent = prov.get("parent")
    base_model = (parent.get("name") or parent.get("path")) if isinstance(parent, dict) else \
        (parent if isinstance(parent, str) else None)
    sources = prov.get("data_sources") or []
    val_loss = prov.get("val_loss")
    if not isinstance(val_loss, (int, float)):
        evals = [r["val_loss"] for r in rows if isinstance(r.get("val_loss"), (int, float))]
        val_loss = evals[-1] if evals else None
    return {"prov": prov, "cfg": cfg, "run_dir": run_dir, "run_cfg": run_cfg, "rows": rows,
            "name": name.removesuffix(".gguf").removesuffix(".safetensors"), "parent": parent,
            "base_model": base_model, "sources": [sources] if isinstance(sources, str) else sources,
            "val_loss": val_loss, "family": (cfg.family if cfg else prov.get("architecture")) or "unknown"}


def _run_files(run: RunDir | None) -> tuple[dict, list[dict]]:
    """The run's config.yaml and metrics.jsonl records, each empty when the run has none that reads."""
    if run is None:
        return {}, []
    try:
        run_cfg = run.config()
    except WarmstartError:  # a card can still be written
        run_cfg = {}
    try:
        return run_cfg, run.metrics()
    except (OSError, WarmstartError):
        return run_cfg, []


def _front_matter(c: dict) -> dict[str, Any]:
    front: dict[str, Any] = {"license": c["prov"].get("license") or "other"}
    if c["base_model"]:
        front["base_model"] = c["base_model"]
    if c["sources"]:
        front["datasets"] = [str(s) for s in c["sources"]]
    front["library_name"] = "transformers"
    front["pipeline_tag"] = "text-generation"
    front["tags"] = ["warmstart", c["family"], "text-generation"]
    if c["prov"].get("warmstart_version") is not None:
        front["tags"].append("continued-pretraining" if c["base_model"] else "pretraining")
    val_loss, sources = c["val_loss"], c["sources"]
    if val_loss is not None:
        front["model-index"] = [{
            "name": c["name"],
            "results": [{
                "task": {"type": "text-generation", "name": "Causal language modeling"},
                "dataset": {"name": ", ".join(map(str, sources)) or "held-out split",
                            "type": str(sources[0]) if sources else "custom"},
                "metrics": [
                    {"type": "loss", "name": "val_loss", "value": round(float(val_loss), 4)},
                    {"type": "perplexity", "name": "perplexity",
                     "value": round(math.exp(float(val_loss)), 3) if float(val_loss) < 50 else None},
                ],
            }],
        }]
    return front


def _description(ckpt, c: dict) -> list[str]:
    n_params = ckpt.num_parameters()
    desc = f"A {c['family']} decoder-only language model"
    if n_params:
        desc += f" with {n_params / 1e6:.1f}M parameters"
    trained_here = c["prov"].get("warmstart_version") is not None
    if c["base_model"]:
        desc += f", continued-pretrained from `{c['base_model']}`"
    elif trained_here:
        desc += ", pretrained from scratch"
    desc += " with [warmstart](https://pypi.org/project/warmstart/)." if trained_here else \
        " (card written by [warmstart](https://pypi.org/project/warmstart/); no warmstart training record)."
    out = [desc + "\n"]
    cfg = c["cfg"]
    if cfg is not None:
        out.append(f"Architecture: `{cfg.hf_architecture}` (model_type `{cfg.model_type}`), {cfg.num_layers} "
                   f"layers, hidden size {cfg.hidden_size}, {cfg.num_heads} attention heads "
                   f"({cfg.num_kv_heads} key/value heads), vocabulary {cfg.vocab_size}, context "
                   f"{cfg.max_position_embeddings}.\n")
    return out


def _long_context(prov: dict) -> list[str]:
    """The context extension and the attention of the run (``pretrain --context-length/--rope-theta/
    --rope-scaling``, ``--attention``, ``--positions``), where the run recorded them."""
    from warmstart.arch.context import describe_change

    out = []
    change = prov.get("context_extension")
    if isinstance(change, dict) and isinstance(change.get("from"), dict) and isinstance(change.get("to"), dict):
        out.append(f"- context extended at the warm start: {describe_change(change)}\n")
    if prov.get("attention") or prov.get("positions"):
        out.append(f"- attention: {prov.get('attention', 'causal')} (positions: {prov.get('positions', 'window')})\n")
    return out


def _training_procedure(ckpt, c: dict) -> list[str]:
    prov, base_model, run_cfg = c["prov"], c["base_model"], c["run_cfg"]
    out = ["## Training procedure\n"]
    if prov.get("step") is not None or prov.get("tokens_seen") is not None:
        out.append(f"- steps: {prov.get('step', '–')}\n- tokens seen: {prov.get('tokens_seen', '–')}\n"
                   f"- validation loss at save: {c['val_loss'] if c['val_loss'] is not None else '–'}\n"
                   f"- data fingerprint: `{prov.get('data_fingerprint', '–')}`\n"
                   f"- warmstart version: {prov.get('warmstart_version', '–')}\n")
    if base_model:
        sha = c["parent"].get("sha256") if isinstance(c["parent"], dict) else None
        out.append(f"- initialised from: `{base_model}`" + (f" (sha256 `{sha[:16]}…`)" if sha else "") + "\n")
    out += _long_context(prov)
    out.append(f"- sha256 of these weights (the lineage hash `warmstart pretrain --init` records for a model "
               f"started from this one): `{lineage_hash(ckpt)}`\n")
    if run_cfg:
        out.append("\nRun configuration (`config.yaml` of the run):\n")
        out.append("| setting | value |\n|---|---|")
        for k, v in run_cfg.items():
            if isinstance(v, (dict, list)):
                v = json.dumps(v)
            out.append(f"| {k} | {str(v).replace('|', '/')} |")
        out.append("")
    elif not (prov.get("step") or base_model):
        out.append("_No training record was found with this checkpoint._\n")
    return out


def _how_to_use(ckpt) -> list[str]:
    if ckpt.format == FORMAT_GGUF:
        fname = Path(ckpt.root).name
        load = (f"repo = \"REPO_ID\"  # or a local directory holding {fname}\n"
                f"tokenizer = AutoTokenizer.from_pretrained(repo, gguf_file=\"{fname}\")\n"
                f"model = AutoModelForCausalLM.from_pretrained(repo, gguf_file=\"{fname}\")\n")
    else:
        load = ("repo = \"REPO_ID\"  # or the local checkpoint directory\n"
                "tokenizer = AutoTokenizer.from_pretrained(repo)\n"
                "model = AutoModelForCausalLM.from_pretrained(repo)\n")
    return ["## How to use\n",
            "```python\nfrom transformers import AutoModelForCausalLM, AutoTokenizer\n\n" + load
            + "ids = tokenizer(\"def fibonacci(n):\", return_tensors=\"pt\").input_ids\n"
            "print(tokenizer.decode(model.generate(ids, max_new_tokens=40)[0]))\n```\n",
            "With warmstart:\n\n```bash\nwarmstart generate CKPT --prompt \"def fibonacci(n):\"\n"
            "warmstart eval CKPT --data my_corpus.txt\n```\n"]


def _reproduce(c: dict) -> list[str]:
    run_dir, base_model, sources = c["run_dir"], c["base_model"], c["sources"]
    if run_dir is not None:
        cmd = f"warmstart pretrain --config {run_dir / 'config.yaml'}"
        if base_model and "init" not in c["run_cfg"]:
            cmd += f" --init {base_model}"
    else:
        cmd = "warmstart pretrain" + (f" --init {base_model}" if base_model else " --preset <preset>") \
            + (" --data " + " --data ".join(map(str, sources)) if sources else "")
    return ["## Reproduce\n", f"```bash\n{cmd}\n```\n"]


def write_card(ckpt_path: str | Path, out: str | Path, *, force: bool = False) -> Path:
    from warmstart.checkpoint.write import atomic_write_text

    from warmstart.files import check_output

    out = Path(out)
    check_output(out, replace=force)
    text = build_card(ckpt_path)
    atomic_write_text(out, text)
    return out


__all__ = ["build_card", "eval_sets_section", "loss_table", "mixture_section", "write_card"]
