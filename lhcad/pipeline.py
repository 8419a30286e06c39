"""``lhcad run``: the configured stages in order, each reading and writing the Zarr store.

Stage functions take ``(config, context)`` and return a dict ``{"figures": {...}, "plots": [...],
"artefacts": {...}}`` that goes into ``summary.json``. They are registered in
:data:`STAGE_FUNCTIONS` as ``"module:function"`` strings (imported only when the stage runs).

Every stage is keyed by a hash of its own config section, the keys of the stages it reads from and
the lhcad version (:func:`stage_keys`). A finished stage leaves ``<workdir>/.stages/<stage>.json``
with its key and result; a rerun skips a stage whose key is unchanged, so a changed config
recomputes only what depends on it.

``store`` may be a local path or an fsspec URL (``s3://bucket/run/store.zarr``: zarr's FsspecStore;
credentials and endpoint from the usual variables, e.g. ``AWS_ACCESS_KEY_ID`` and
``AWS_ENDPOINT_URL_S3``). ``workdir`` may be a URL too: stages then work in a local copy
(:func:`staging_dir`), which is filled from the URL before the run (so a run on another machine
resumes) and uploaded to it after every finished stage (:func:`push_workdir`).
"""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

import lhcad
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

# Which config sections and upstream stages each stage's output depends on.
STAGE_INPUTS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "generate": (("generate",), ()),
    "process": (("process",), ("generate",)),
    "train": (("train", "cluster"), ("process",)),
    "score": (("train",), ("train",)),
    "stats": (("stats",), ("score",)),
    "dqm": (("dqm",), ("process",)),
    "l1": (("l1",), ("process",)),
    "deploy": (("deploy",), ("l1",)),
    "report": ((), ("generate", "process", "train", "score", "stats", "dqm", "l1", "deploy")),
}

# stage name -> "module:function"; a stage is listed once it is implemented.
STAGE_FUNCTIONS: dict[str, str] = {
    "generate": "lhcad.generate.stage:pipeline_stage",
    "process": "lhcad.processors.runner:pipeline_stage",
    "train": "lhcad.models.cli:pipeline_train",
    "score": "lhcad.models.cli:pipeline_score",
    "stats": "lhcad.stats.stage:pipeline_stage",
    "dqm": "lhcad.dqm.stage:pipeline_stage",
    "l1": "lhcad.models.l1_jobs:pipeline_stage",
    "deploy": "lhcad.deploy.firmware:pipeline_stage",
    "report": "lhcad.report:pipeline_stage",
}


@dataclass
class RunContext:
    """What a stage function gets besides the config: where to write, and the results so far."""

    config: _config.PipelineConfig
    config_path: str
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def workdir(self) -> Path:
        return Path(self.config.workdir)


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def stage_keys(cfg: _config.PipelineConfig) -> dict[str, str]:
    """Hash key of every stage: its config sections, upstream keys, store path and lhcad version."""
    keys: dict[str, str] = {}
    dump = cfg.model_dump(mode="json")
    for stage in _config.STAGES:
        sections, upstream = STAGE_INPUTS[stage]
        keys[stage] = _digest(
            {
                "stage": stage,
                "config": {s: dump[s] for s in sections},
                "upstream": {u: keys[u] for u in upstream if u in cfg.stages},
                "store": cfg.store,
                "version": lhcad.__version__,
            }
        )
    return keys


def _marker(cfg: _config.PipelineConfig, stage: str) -> Path:
    return Path(cfg.workdir) / ".stages" / f"{stage}.json"


def _done(cfg: _config.PipelineConfig, stage: str, key: str) -> dict | None:
    """The stored result of ``stage`` if it finished with the same key, else None."""
    path = _marker(cfg, stage)
    try:
        record = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return record.get("result") if record.get("key") == key else None


# ----------------------------------------------------------------------- workdir at an fsspec URL
def is_url(path: str) -> bool:
    return "://" in str(path)


def staging_dir(url: str) -> Path:
    """The local working copy of a workdir URL: ``$XDG_CACHE_HOME/lhcad/workdirs/<hash of url>``."""
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "lhcad" / "workdirs" / hashlib.sha256(url.encode()).hexdigest()[:16]


def _url_fs(url: str):
    import fsspec

    fs, root = fsspec.core.url_to_fs(url)
    return fs, root.rstrip("/")


def pull_workdir(url: str, local: Path, only: str = "") -> int:
    """Download the files under ``url`` (below ``only``) that ``local`` lacks or holds at another
    size; stage markers always. Returns the number of files copied."""
    fs, root = _url_fs(url)
    if not fs.exists(root):
        return 0
    copied = 0
    for path, info in fs.find(f"{root}/{only}".rstrip("/"), detail=True).items():
        rel = path[len(root) + 1:]
        dest = local / rel
        if rel.startswith(".stages/") or not dest.is_file() or dest.stat().st_size != info.get("size"):
            dest.parent.mkdir(parents=True, exist_ok=True)
            fs.get_file(path, str(dest))
            copied += 1
    return copied


def push_workdir(local: Path, url: str, since_ns: int = 0, always: tuple[str, ...] = ("run.log",)) -> int:
    """Upload the files of ``local`` modified since ``since_ns`` (``time.time_ns()``), missing under
    ``url`` or named in ``always`` to ``url``. Returns the number of files copied."""
    fs, root = _url_fs(url)
    remote = set(fs.find(root)) if fs.exists(root) else set()
    copied = 0
    for path in sorted(local.rglob("*")):
        if not path.is_file() or path.suffix == ".tmp":
            continue
        target = f"{root}/{path.relative_to(local).as_posix()}"
        if path.stat().st_mtime_ns >= since_ns or target not in remote or path.name in always:
            fs.put_file(str(path), target)
            copied += 1
    return copied


def _rebase(obj: Any, old: str, new: str) -> Any:
    """``obj`` with every string path under ``old`` moved under ``new``."""
    if isinstance(obj, dict):
        return {k: _rebase(v, old, new) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_rebase(v, old, new) for v in obj]
    if isinstance(obj, str) and obj.startswith(old):
        return new.rstrip("/") + obj[len(old):]
    return obj


def _local_config(cfg: _config.PipelineConfig, only: str = "") -> _config.PipelineConfig:
    """``cfg`` itself for a local workdir; for a URL, a copy pointing at the local working copy,
    filled from the URL first (everything, or just the files below ``only``)."""
    if not is_url(cfg.workdir):
        return cfg
    local = staging_dir(cfg.workdir)
    local.mkdir(parents=True, exist_ok=True)
    try:
        n = pull_workdir(cfg.workdir, local, only)
    except (ImportError, ValueError, OSError) as exc:  # unknown protocol, missing fsspec backend, no access
        error = " ".join(str(exc).split()) or type(exc).__name__
        raise _config.ConfigError(f"workdir: cannot read {cfg.workdir}: {error}") from None
    if n:
        log.info("workdir %s: %d files copied into the local working copy %s", cfg.workdir, n, local)
    return cfg.model_copy(update={"workdir": str(local)})


def plan(cfg: _config.PipelineConfig) -> list[dict[str, Any]]:
    """The ordered stages of a run: what each does, whether it is available and already done."""
    cfg = _local_config(cfg, only=".stages")
    keys = stage_keys(cfg)
    rows = []
    for stage in _config.STAGES:
        if stage not in cfg.stages:
            continue
        rows.append(
            {
                "stage": stage,
                "what": STAGE_DESCRIPTIONS[stage],
                "available": stage in STAGE_FUNCTIONS,
                "key": keys[stage],
                "done": _done(cfg, stage, keys[stage]) is not None,
            }
        )
    return rows


def _resolve(stage: str):
    module, func = STAGE_FUNCTIONS[stage].split(":")
    return getattr(importlib.import_module(module), func)


def run(cfg: _config.PipelineConfig, config_path: str = "<config>", force: bool = False) -> dict[str, Any]:
    """Run every configured stage in order (skipping finished ones); returns the summary."""
    url = cfg.workdir if is_url(cfg.workdir) else None
    cfg = _local_config(cfg)
    rows = plan(cfg)
    missing = [r["stage"] for r in rows if not r["available"]]
    if missing:
        raise _config.ConfigError(
            f"{config_path}: stages: {', '.join(missing)} not available in this lhcad "
            f"(available: {', '.join(STAGE_FUNCTIONS) or 'none'})"
        )
    ctx = RunContext(cfg, config_path)
    ctx.workdir.mkdir(parents=True, exist_ok=True)
    run_log = ctx.workdir / "run.log"

    def log_line(stage: str, event: str, key: str, extra: str = "") -> None:
        with run_log.open("a") as fh:
            fh.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {stage} {event} key={key}{extra}\n")

    timings: dict[str, float] = {}
    for row in rows:
        stage = row["stage"]
        previous = None if force else _done(cfg, stage, row["key"])
        if previous is not None:
            console.print(f"[dim]stage {stage}: done before (key {row['key']}), skipped[/]")
            log_line(stage, "skipped", row["key"])
            ctx.summary[stage] = previous
            timings[stage] = 0.0
            continue
        console.rule(f"stage {stage}: {row['what']}")
        log_line(stage, "started", row["key"])
        started_ns = time.time_ns()
        t0 = time.perf_counter()
        result = _resolve(stage)(cfg, ctx)
        timings[stage] = time.perf_counter() - t0
        ctx.summary[stage] = result
        marker = _marker(cfg, stage)
        marker.parent.mkdir(parents=True, exist_ok=True)
        tmp = marker.with_suffix(".tmp")
        tmp.write_text(json.dumps({"key": row["key"], "result": result}, indent=1, default=str))
        tmp.replace(marker)  # atomic: a killed stage leaves no marker and reruns
        log_line(stage, "done", row["key"], f" wall_s={timings[stage]:.1f}")
        if url:
            push_workdir(ctx.workdir, url, started_ns)
    workdir = str(ctx.workdir.resolve())
    summary = {"config": config_path, "lhcad_version": lhcad.__version__, "workdir": url or workdir,
               "store": str(cfg.store), "stage_wall_s": timings,
               "stages": _rebase(ctx.summary, workdir, url) if url else ctx.summary}
    written_ns = time.time_ns()
    out = ctx.workdir / "summary.json"
    out.write_text(json.dumps(summary, indent=2, default=str))
    if url:
        push_workdir(ctx.workdir, url, written_ns)
    return summary


def reproducible(summary: dict[str, Any]) -> dict[str, Any]:
    """What two runs of one config must agree on, whatever their timing and location: every stage's
    figures, plots and artefacts, with wall-clock figures (keys containing ``wall``) dropped and the
    run's workdir and store written as ``<workdir>`` and ``<store>``.

    A run killed part-way and resumed gives the same ``reproducible(summary)`` as a clean run.
    """
    workdir, store = summary.get("workdir"), summary.get("store")

    def clean(obj: Any) -> Any:
        if isinstance(obj, dict):
            return {k: clean(v) for k, v in obj.items() if "wall" not in str(k)}
        if isinstance(obj, list | tuple):
            return [clean(v) for v in obj]
        if isinstance(obj, str):
            if store and store in obj:
                obj = obj.replace(store, "<store>")
            return obj.replace(workdir, "<workdir>") if workdir else obj
        return obj

    return clean(summary["stages"])


def run_command(
    config: Annotated[Path, typer.Argument(help="Pipeline YAML config (e.g. configs/demo.yaml).")],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the plan of stages and exit.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Rerun stages even if they finished before.")] = False,
) -> None:
    """Run the configured pipeline stages in order (generate → process → ... → report)."""
    cfg = _config.load(config)
    if dry_run:
        table = Table(title=f"lhcad run {config} — plan")
        for col in ("#", "stage", "what", "status"):
            table.add_column(col)
        for i, row in enumerate(plan(cfg), 1):
            if not row["available"]:
                status = "[red]not available[/]"
            elif row["done"] and not force:
                status = "[green]skip (done)[/]"
            else:
                status = "will run"
            table.add_row(str(i), row["stage"], row["what"], status)
        console.print(table)
        console.print(f"store: {cfg.store}   workdir: {cfg.workdir}   cluster: {cfg.cluster.type}"
                      f" ({cfg.cluster.workers} workers × {cfg.cluster.threads_per_worker} threads)")
        return
    summary = run(cfg, str(config), force=force)
    console.print(f"summary: {summary['workdir'].rstrip('/')}/summary.json ({len(summary['stages'])} stages)")
    report = summary["stages"].get("report", {}).get("artefacts", {}).get("report")
    if report:
        console.print(f"report:  {report}")
