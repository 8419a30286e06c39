"""The ``generate`` stage of ``lhcad run``: what ``cfg.generate`` asks, into ``workdir/generated/``."""

from __future__ import annotations

import importlib
import logging
from typing import Any

log = logging.getLogger(__name__)

# kind -> (module, function) writing that kind into a directory: fn(config, out_dir) -> truth dict
GENERATORS = {
    "dijet": ("lhcad.generate.dijet_output", "generate_dijet"),
    "dqm": ("lhcad.generate.dqm", "generate_dqm"),
    "l1": ("lhcad.generate.l1", "generate_l1"),
}


def _summary(kind: str, truth: dict[str, Any]) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    for name, d in truth.get("datasets", {}).items():
        figures[f"{kind}_{name}_events"] = d.get("events")
        if d.get("signal") is not None and kind == "dijet":
            figures[f"{kind}_{name}_signal"] = d.get("signal")
    if kind == "dijet":
        figures["dijet_s_over_b_in_sr"] = truth["datasets"]["data"].get("s_over_b_in_sr")
    if kind == "dqm":
        figures["dqm_bad_ls"] = truth.get("n_bad_ls")
        figures["dqm_runs"] = len(truth.get("runs", {}))
    return figures


def pipeline_stage(cfg, ctx) -> dict[str, Any]:
    """Generate every kind whose config is set (None skips it); returns figures and fileset paths."""
    base = ctx.workdir / "generated"
    figures: dict[str, Any] = {}
    artefacts: dict[str, str] = {}
    for kind, (module, func) in GENERATORS.items():
        kind_cfg = getattr(cfg.generate, kind)
        if kind_cfg is None:
            log.info("generate %s: skipped (no config)", kind)
            continue
        out = base / kind
        truth = getattr(importlib.import_module(module), func)(kind_cfg, out)
        figures.update(_summary(kind, truth))
        artefacts[f"{kind}_fileset"] = str((out / "fileset.json").resolve())
        artefacts[f"{kind}_truth"] = str((out / "truth.json").resolve())
    return {"figures": figures, "plots": [], "artefacts": artefacts}
