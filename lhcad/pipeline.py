"""``lhcad run``: the configured stages in order, each reading and writing the Zarr store.

Stage functions take ``(config, context)`` and return a dict of figures and artefact paths that goes
into ``summary.json``. They are registered in :data:`STAGE_FUNCTIONS` as ``"module:function"``
strings (imported only when the stage runs) when the stage is implemented.
"""

from __future__ import annotations

import importlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from lhcad import config as _config
from lhcad.log import console

log = logging.getLogger(__name__)

STAGE_DESCRIPTIONS = {
    "generate": "synthetic NanoAOD with known truth (dijet + W', DQM runs with faults, L1 mix)",
    "process": "coffea processors → Zarr store (dijet features, per-LS histograms, L1 objects)",
    "train": "AD models as Dask tasks (folds × ensemble × windows)",
    "score": "scores of every model written back into the store",
    "stats": "m_jj fits, sliding-window bump hunt, pyhf limits",
    "dqm": "per-LS autoencoder, LS certification, recovered luminosity",
    "l1": "L1 trigger AD models and ADC2021 metrics",
    "deploy": "QKeras QAT + pruning → hls4ml HLS project + C-sim check",
    "report": "self-contained HTML report + summary.json",
}

# stage name -> "module:function"; a stage is listed once it is implemented.
STAGE_FUNCTIONS: dict[str, str] = {}


@dataclass
class RunContext:
    config: _config.PipelineConfig
    config_path: str
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def workdir(self) -> Path:
        return Path(self.config.workdir)


def plan(cfg: _config.PipelineConfig) -> list[dict[str, Any]]:
    """The ordered stages of a run with what each will do."""
    rows = []
    for stage in _config.STAGES:
        if stage not in cfg.stages:
            continue
        rows.append(
            {
                "stage": stage,
                "what": STAGE_DESCRIPTIONS[stage],
                "available": stage in STAGE_FUNCTIONS,
            }
        )
    return rows


def _resolve(stage: str):
    module, func = STAGE_FUNCTIONS[stage].split(":")
    return getattr(importlib.import_module(module), func)


def run(cfg: _config.PipelineConfig, config_path: str = "<config>") -> dict[str, Any]:
    """Run every configured stage in order; returns the summary (also written to workdir)."""
    missing = [r["stage"] for r in plan(cfg) if not r["available"]]
    if missing:
        raise _config.ConfigError(
            f"{config_path}: stages: {', '.join(missing)} not available in lhcad "
            f"(available: {', '.join(STAGE_FUNCTIONS) or 'none'})"
        )
    ctx = RunContext(cfg, config_path)
    ctx.workdir.mkdir(parents=True, exist_ok=True)
    for row in plan(cfg):
        log.info("stage %s: %s", row["stage"], row["what"])
        ctx.summary[row["stage"]] = _resolve(row["stage"])(cfg, ctx)
    out = ctx.workdir / "summary.json"
    out.write_text(json.dumps(ctx.summary, indent=2, default=str))
    return ctx.summary


def run_command(
    config: Annotated[Path, typer.Argument(help="Pipeline YAML config (e.g. configs/demo.yaml).")],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the plan of stages and exit.")] = False,
) -> None:
    """Run the configured pipeline stages in order (generate → process → ... → report)."""
    cfg = _config.load(config)
    if dry_run:
        table = Table(title=f"lhcad run {config} — plan", show_lines=False)
        for col in ("#", "stage", "what", "status"):
            table.add_column(col)
        for i, row in enumerate(plan(cfg), 1):
            status = "will run" if row["available"] else "[red]not available[/]"
            table.add_row(str(i), row["stage"], row["what"], status)
        console.print(table)
        console.print(f"store: {cfg.store}   workdir: {cfg.workdir}   cluster: {cfg.cluster.type}"
                      f" ({cfg.cluster.workers} workers × {cfg.cluster.threads_per_worker} threads)")
        return
    summary = run(cfg, str(config))
    console.print(f"summary: {Path(cfg.workdir) / 'summary.json'} ({len(summary)} stages)")
