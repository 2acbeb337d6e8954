"""`warmstart publish-check`: the publish pre-flight, fully offline.

Gates, in order; every blocker is listed with its fix, verdict GO only when none fails:
  1 validate       `warmstart validate` passes
  2 quality        `inspect --quality` score >= 90 (prints the `warmstart stamp` recipe when
                   identity or provenance is short)
  3 qa             `warmstart qa` says GO
  4 model-card     a model card with Hugging Face YAML front matter (license at least)
  5 hf-token       HF_TOKEN is set (only the variable is checked; nothing is contacted)
  6 smoke-gen      a greedy continuation of a prompt decodes to non-empty text
  7 export         GGUF (f16) and single-safetensors exports read back to equal logits
Exit 0 only on GO.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from warmstart.checks import FAIL, PASS, SKIP, WARN, Check
from warmstart.release._report import render_gates, verdict
from warmstart.release.qa import QAContext, export_gate, run_qa, validate_gate
from warmstart.release.quality import PASS_SCORE


def default_card_path(path: Path) -> Path:
    return path / "README.md" if path.is_dir() else path.with_name("README.md")


def read_front_matter(text: str) -> tuple[dict | None, str]:
    """(YAML front matter dict or None, problem)."""
    import yaml

    if not text.startswith("---"):
        return None, "does not start with a '---' YAML front matter block"
    lines = text.splitlines()
    try:
        end = next(i for i in range(1, len(lines)) if lines[i].strip() == "---")
    except StopIteration:
        return None, "the YAML front matter block is not closed with '---'"
    try:
        meta = yaml.safe_load("\n".join(lines[1:end]))
    except yaml.YAMLError as err:
        return None, f"the YAML front matter does not parse ({str(err).splitlines()[0]})"
    if not isinstance(meta, dict):
        return None, "the YAML front matter is not a mapping"
    return meta, ""


def card_gate(ckpt_path: Path, card: str | Path | None, root: Path | None = None) -> Check:
    from warmstart.checkpoint.aliases import display_path

    shown, alias_out = display_path(ckpt_path)
    if card:
        p = Path(card)
    elif alias_out is not None:  # a model shipped inside a package: the card lives in the working dir
        p = Path("README.md")
    else:
        cands = [default_card_path(ckpt_path)]
        if root is not None and Path(root) != Path(ckpt_path):
            cands.insert(0, default_card_path(Path(root)))  # a run dir's latest checkpoint dir
        p = next((c for c in cands if c.is_file()), cands[-1])
    fix = f"warmstart card {shown} -o {p}" + (f" and pass --card {p}" if alias_out is not None else "")
    if not p.is_file():
        return Check("model-card", FAIL, f"no model card at {p}", fix=fix)
    meta, problem = read_front_matter(p.read_text(encoding="utf-8", errors="replace"))
    if meta is None:
        return Check("model-card", FAIL, f"{p} {problem}", fix=fix + " --force")
    missing = [k for k in ("license",) if not meta.get(k)]
    if missing:
        return Check("model-card", FAIL, f"{p} front matter lacks {', '.join(missing)}",
                     fix="stamp --license, then " + fix + " --force")
    return Check("model-card", PASS, f"{p} (front matter: {', '.join(sorted(meta)[:8])})")


def publish_check(path: str | Path, *, card: str | Path | None = None,
                  env: dict[str, str] | None = None) -> dict[str, Any]:
    env = os.environ if env is None else env
    ctx = QAContext(path)
    gates: list[Check] = []
    v = ctx.validation
    gates.append(validate_gate(v, "run `warmstart validate CKPT` and repair or re-export"))
    if not ctx.readable:
        for n in ("quality", "qa", "model-card", "hf-token", "smoke-gen", "export"):
            gates.append(Check(n, SKIP, "the checkpoint is not readable"))
        return _finish(ctx, gates, None, exit_code=2 if v["verdict"] == "UNREADABLE" else 1)
    q = ctx.quality()
    short = [f"{d['name']} {d['score']}/{d['max']}: " + "; ".join(d["missing"])
             for d in q["dimensions"].values() if d["missing"]]
    if q["score"] >= PASS_SCORE:
        gates.append(Check("quality", WARN if q.get("stamp_recipe") else PASS,
                           f"score {q['score']}/100 >= {PASS_SCORE}", items=short, fix=q.get("stamp_recipe") or ""))
    else:
        gates.append(Check("quality", FAIL, f"score {q['score']}/100 < {PASS_SCORE}", items=short,
                           fix=q.get("stamp_recipe") or "; ".join(d["fix"] for d in q["dimensions"].values()
                                                                  if d["missing"] and d["fix"])))
    qa = run_qa(path, ctx=ctx)
    gates.append(Check("qa", PASS if qa["verdict"] == "GO" else FAIL, f"qa {qa['verdict']}",
                       items=[b for b in qa["blockers"]], fix="" if qa["verdict"] == "GO" else
                       "fix the qa blockers listed (run `warmstart qa CKPT`)"))
    gates.append(card_gate(ctx.path, card, getattr(ctx.ckpt, "root", None)))
    tok = env.get("HF_TOKEN", "")
    gates.append(Check("hf-token", PASS if tok.strip() else FAIL,
                       "HF_TOKEN is set" if tok.strip() else "HF_TOKEN is not set",
                       fix="" if tok.strip() else "export HF_TOKEN=<a write token from "
                       "https://huggingface.co/settings/tokens>"))
    if ctx.model() is None:
        gates.append(Check("smoke-gen", FAIL, f"the model cannot be built: {ctx.model_error}"))
    else:
        g = ctx.generate()
        text = g["text"]
        gates.append(Check("smoke-gen", PASS if text.strip() else FAIL,
                           f"{PROMPT!r} -> {text[:80]!r}" if text.strip() else "generation decodes to empty text",
                           fix="" if text.strip() else "the model is untrained or its tokenizer/eos id is wrong",
                           data=g))
    st = next((g for g in qa["gates"] if g.name == "export-safetensors"), None)
    gg = export_gate(ctx, "gguf", "f16")
    parts = [x for x in (gg, st) if x is not None]
    bad = [x for x in parts if x.status != PASS]
    gates.append(Check("export", FAIL if bad else PASS,
                       "; ".join(x.detail for x in bad) if bad else "GGUF f16 and safetensors f32 read back equal",
                       fix="; ".join(x.fix for x in bad if x.fix)))
    return _finish(ctx, gates, q)


PROMPT = "def count_words(path):"


def render_publish(r: dict[str, Any]) -> str:
    text = render_gates("publish-check", r)
    if r["blockers"]:
        text += "\nblockers:\n" + "\n".join(f"  {i}. {b}" for i, b in enumerate(r["blockers"], 1))
    if r.get("stamp_recipe"):
        text += f"\nstamp recipe: {r['stamp_recipe']}"
    return text


def _finish(ctx: QAContext, gates: list[Check], q: dict | None, exit_code: int | None = None) -> dict[str, Any]:
    for i, g in enumerate(gates, 1):
        g.data.setdefault("order", i)
    return verdict(ctx.path, gates, exit_code, quality=q, stamp_recipe=(q or {}).get("stamp_recipe"))


__all__ = ["card_gate", "default_card_path", "publish_check", "read_front_matter", "render_publish"]
