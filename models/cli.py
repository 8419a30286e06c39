"""``lhcad train METHOD`` and ``lhcad score METHOD``: the weakly supervised methods as Dask jobs.

METHOD is one of supervised, iad, cwola, anode, cathode, ranode, cathode_b, vaeqr, tagntrain, quak
— or ``all`` (the config's list).
``train`` fits every fold × ensemble member (and the sideband background flows) as tasks and saves
their artefacts; ``score`` scores with them, writes ``dijet/scores/<method>__<lo>_<hi>`` into the
store and prints max SIC / AUC on the labelled test events.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import typer

train_app = typer.Typer(help="Train weakly supervised AD models as Dask tasks (folds × members × windows).",
                        no_args_is_help=True)
score_app = typer.Typer(help="Score with trained AD models; write scores into the store; evaluate.",
                        no_args_is_help=True)

METHOD_HELP = {
    "supervised": "signal vs background with truth labels (the ceiling; needs a 'test' dataset)",
    "iad": "idealized AD: SR data vs a perfectly known SR background ('extra_bkg' dataset)",
    "cwola": "CWoLa hunting: SR vs neighbouring sidebands, k-fold",
    "anode": "ANODE: SR flow / sideband flow density ratio",
    "cathode": "CATHODE: SR data vs a sideband-flow background template",
    "ranode": "R-ANODE: signal flow + fraction on SR data with the sideband flow frozen",
    "cathode_b": "CATHODE-b: CATHODE on the LHCO features + DeepB of both jets",
    "vaeqr": "VAE-QR: per-jet VAE (|Δη| sideband), min-jet loss decorrelated from m_jj by quantile regression",
    "tagntrain": "Tag-N-Train: per-jet AE tags build enriched/depleted SR samples for per-jet CWoLa classifiers",
    "quak": "QUAK: background-simulation flow vs signal-prior flow ('mc_bkg' + 'mc_*' datasets), L_B - w L_S",
    "all": "every method in the config's train.methods",
}


def _settings(config, store, sr, features, folds, ensemble, classifier, flow_epochs, flow_max_events,
              sb_width, device, seed, workdir, artefacts, cluster_type, workers, threads):
    """PipelineConfig from --config (or defaults) with the command-line overrides applied."""
    from lhcad import config as _config
    from lhcad.cli import UsageError

    cfg = _config.load(config) if config else _config.PipelineConfig()
    train = cfg.train.model_dump()
    if sr is not None and None in sr:
        sr = None
    over = {"sr": sr, "features": features.split(",") if features else None, "folds": folds,
            "ensemble": ensemble, "classifier": classifier, "flow_epochs": flow_epochs,
            "flow_max_events": flow_max_events, "sb_width": sb_width, "device": device, "seed": seed,
            "artefacts": artefacts}
    train.update({k: v for k, v in over.items() if v is not None})
    cl = cfg.cluster.model_dump()
    cl.update({k: v for k, v in {"type": cluster_type, "workers": workers, "threads_per_worker": threads}.items()
               if v is not None})
    data = cfg.model_dump()
    data.update({"train": train, "cluster": cl})
    if store:
        data["store"] = store
    if workdir:
        data["workdir"] = workdir
    cfg = _config.validate(data, "command line")
    if not Path(cfg.store).exists() and "://" not in cfg.store:
        raise UsageError(f"{cfg.store}: store not found (run `lhcad process` or pass --store)")
    return cfg


def artefact_root(cfg) -> Path:
    return Path(cfg.train.artefacts) if cfg.train.artefacts else Path(cfg.workdir) / "train"


def run_jobs(cfg, methods, do_train: bool, do_score: bool) -> dict:
    """Open the configured cluster and train and/or score ``methods``; user errors → UsageError."""
    from lhcad.cli import UsageError
    from lhcad.cluster import open_cluster
    from lhcad.models import jobs
    from lhcad.models.data import DataError
    from lhcad.store import StoreError

    out: dict = {"train_wall_s": {}, "score_wall_s": {}, "results": {}}
    try:
        spec = jobs.make_spec(cfg.store, cfg.train, artefact_root(cfg), cfg.cluster.threads_per_worker)
        for method in methods:          # fail fast, before any cluster starts
            mspec = jobs.method_spec(spec, method)
            d = jobs.task_data(mspec)
            for sr in jobs.windows(spec["cfg"]):
                jobs.training_pool(d, method, sr, mspec["cfg"])
        with open_cluster(cfg.cluster) as cluster:
            if do_train:
                for method in methods:
                    t0 = time.perf_counter()
                    wall = jobs.train(cluster, spec, [method])
                    out["train_wall_s"][method] = time.perf_counter() - t0
                    out.setdefault("task_wall_s", {}).update(wall)
            if do_score:
                for method in methods:
                    t0 = time.perf_counter()
                    out["results"].update(jobs.score(cluster, spec, [method]))
                    out["score_wall_s"][method] = time.perf_counter() - t0
    except (DataError, StoreError) as exc:
        raise UsageError(str(exc)) from None
    return out


def _print_results(results: dict) -> None:
    from rich.table import Table

    from lhcad.log import console

    table = Table(title="weakly supervised AD — labelled SR test events")
    for col in ("scores key", "max SIC", "AUC", "cut rule", "extra"):
        table.add_column(col)
    for key, r in results.items():
        extra = ", ".join(f"{k}={r[k]:.3f}" for k in ("template_auc", "signal_fraction") if k in r)
        table.add_row(key, f"{r.get('max_sic', float('nan')):.2f}", f"{r.get('auc', float('nan')):.3f}",
                      r.get("rule", "no labels"), extra)
    console.print(table)


def _make_command(method: str, do_train: bool):
    def command(
        store: Annotated[str | None, typer.Option("--store", help="Zarr store with the dijet table.")] = None,
        sr: Annotated[tuple[float, float] | None, typer.Option("--sr", help="Signal region LO HI in GeV.")] = None,
        config: Annotated[Path | None, typer.Option("--config", "-c", help="Pipeline YAML (train + cluster).")] = None,
        features: Annotated[str | None, typer.Option(help="Comma-separated feature columns.")] = None,
        folds: Annotated[int | None, typer.Option(help="k of the k-fold split.")] = None,
        ensemble: Annotated[int | None, typer.Option(help="Ensemble members per fold.")] = None,
        classifier: Annotated[str | None, typer.Option(help="hgb or mlp.")] = None,
        flow_epochs: Annotated[int | None, typer.Option(help="Background-flow epochs.")] = None,
        flow_max_events: Annotated[int | None, typer.Option(help="Subsample the flow's sideband data.")] = None,
        sb_width: Annotated[float | None, typer.Option(help="CWoLa sideband width (GeV).")] = None,
        device: Annotated[str | None, typer.Option(help="auto, cpu or cuda.")] = None,
        seed: Annotated[int | None, typer.Option(help="Seed of folds and members.")] = None,
        workdir: Annotated[str | None, typer.Option(help="Work directory (artefacts in WORKDIR/train).")] = None,
        artefacts: Annotated[str | None, typer.Option(help="Artefact folder (overrides WORKDIR/train).")] = None,
        cluster: Annotated[str | None, typer.Option("--cluster", help="cluster.type (dask-local, iterative, ...).")] = None,
        workers: Annotated[int | None, typer.Option(help="Dask workers.")] = None,
        threads: Annotated[int | None, typer.Option(help="Threads per worker (= torch threads per task).")] = None,
        json_out: Annotated[Path | None, typer.Option("--json", help="Write the figures as JSON here.")] = None,
    ) -> None:
        cfg = _settings(config, store, sr, features, folds, ensemble, classifier, flow_epochs, flow_max_events,
                        sb_width, device, seed, workdir, artefacts, cluster, workers, threads)
        methods = list(cfg.train.methods) if method == "all" else [method]
        out = run_jobs(cfg, methods, do_train=do_train, do_score=not do_train)
        if not do_train:
            _print_results(out["results"])
        else:
            from lhcad.log import console

            for m, w in out["train_wall_s"].items():
                console.print(f"trained {m}: {w:.1f} s wall; artefacts under {artefact_root(cfg)}")
        if json_out:
            json_out.write_text(json.dumps(out, indent=2, default=float))

    verb = "Train" if do_train else "Score with"
    command.__doc__ = f"{verb} {method}: {METHOD_HELP[method]}."
    return command


for _m in METHOD_HELP:
    train_app.command(_m)(_make_command(_m, True))
    score_app.command(_m)(_make_command(_m, False))


def pipeline_train(cfg, ctx) -> dict:
    """``lhcad run`` stage "train": fit every configured method (artefacts under workdir/train)."""
    out = run_jobs(cfg, list(cfg.train.methods), do_train=True, do_score=False)
    return {"figures": {"train_wall_s": out["train_wall_s"]}, "plots": [],
            "artefacts": {"train": str(artefact_root(cfg).resolve())}}


def pipeline_score(cfg, ctx) -> dict:
    """``lhcad run`` stage "score": score, write into the store, evaluate, plot SIC curves."""
    import numpy as np

    from lhcad.models import jobs
    from lhcad.models.metrics import plot_sic

    out = run_jobs(cfg, list(cfg.train.methods), do_train=False, do_score=True)
    figures = {key: {k: r[k] for k in ("max_sic", "auc", "rule", "template_auc", "signal_fraction") if k in r}
               for key, r in out["results"].items()}
    plots = []
    spec = jobs.make_spec(cfg.store, cfg.train, artefact_root(cfg))
    d = jobs.task_data(spec)
    outdir = Path(cfg.workdir) / "score"
    outdir.mkdir(parents=True, exist_ok=True)
    from lhcad.store import read_scores

    for sr in jobs.windows(spec["cfg"]):
        rows, name = jobs.evaluation_rows(d, sr)
        if not rows.any():
            continue
        curves = {m: (d.truth[rows] > 0, read_scores(cfg.store, "dijet", jobs.score_key(m, sr))[rows])
                  for m in cfg.train.methods}
        curves = {m: c for m, c in curves.items() if np.isfinite(c[1]).all()}
        path = outdir / f"sic_{jobs.window_key(sr)}.png"
        plots.append(str(plot_sic(curves, path, f"SR {sr[0]:g}-{sr[1]:g} GeV ({name})").__str__()))
    (outdir / "figures.json").write_text(json.dumps(figures, indent=2, default=float))
    return {"figures": figures, "plots": [str(Path(p).resolve()) for p in plots],
            "artefacts": {"figures": str((outdir / "figures.json").resolve())}}
