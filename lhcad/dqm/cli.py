"""``lhcad dqm train|score|certify|lumi`` — the DQM stage from the command line."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Annotated, Optional

import typer

app = typer.Typer(help="Data-quality monitoring: per-LS autoencoders, LS certification, recovered luminosity.",
                  no_args_is_help=True)

StoreOpt = Annotated[str, typer.Option("--store", help="Zarr store with lumi/<ME> histograms.")]
OutOpt = Annotated[Path, typer.Option("--out", help="Folder for models / certification outputs.")]
ConfigOpt = Annotated[Optional[Path], typer.Option("--config", help="Pipeline YAML; its dqm: and cluster: blocks are used.")]
ExecOpt = Annotated[Optional[str], typer.Option("--executor", help="iterative | futures | dask-local | dask-address ...")]
WorkersOpt = Annotated[Optional[int], typer.Option("--workers", help="Dask workers.")]


def _configs(config: Path | None, executor: str | None, workers: int | None, **dqm_overrides):
    from lhcad import config as _config

    cfg = _config.load(config) if config else _config.PipelineConfig()
    dqm = cfg.dqm.model_dump()
    dqm.update({k: v for k, v in dqm_overrides.items() if v not in (None, [], ())})
    dqm_cfg = _config.validate(dqm, f"{config or '<options>'}: dqm", _config.DQMConfig)
    cl = cfg.cluster.model_dump()
    if executor:
        cl["type"] = executor
    if workers:
        cl["workers"] = workers
    return dqm_cfg, _config.validate(cl, f"{config or '<options>'}: cluster", _config.ClusterConfig)


def _check_store(store: str) -> None:
    from lhcad.cli import UsageError

    if "://" not in store and not Path(store).exists():
        raise UsageError(f"{store}: store not found")


@contextlib.contextmanager
def _user_errors():
    """A missing store group/array or an unreadable input is the user's to fix: exit code 2."""
    from lhcad.cli import UsageError
    from lhcad.store import StoreError

    try:
        yield
    except StoreError as exc:
        raise UsageError(str(exc)) from None


@app.command("train")
def train_cmd(
    store: StoreOpt,
    out: OutOpt,
    reference: Annotated[Optional[str], typer.Option(help="Golden JSON of GOOD reference LSs.")] = None,
    reference_runs: Annotated[Optional[str], typer.Option(help="Comma-separated GOOD reference runs.")] = None,
    me: Annotated[Optional[list[str]], typer.Option("--me", help="Monitor element (repeatable; default all).")] = None,
    model: Annotated[Optional[list[str]], typer.Option("--model", help="dense and/or lstm (repeatable).")] = None,
    false_flag_rate: Annotated[Optional[float], typer.Option(help="Target false-flag rate per LS.")] = None,
    epochs: Annotated[Optional[int], typer.Option(help="Training epochs.")] = None,
    holdout_fraction: Annotated[Optional[float], typer.Option(help="Share of reference runs held out for calibration.")] = None,
    config: ConfigOpt = None,
    executor: ExecOpt = None,
    workers: WorkersOpt = None,
) -> None:
    """Train the AEs on GOOD reference LSs (one Dask task per ME × model) and calibrate thresholds."""
    from lhcad.cli import UsageError
    from lhcad.cluster import open_cluster
    from lhcad.dqm import workflow

    _check_store(store)
    runs = None
    if reference_runs:
        try:
            runs = [int(x) for x in reference_runs.split(",") if x.strip()]
        except ValueError:
            raise UsageError(f"--reference-runs: expected comma-separated run numbers, got {reference_runs!r}") from None
    kw = dict(reference=reference, reference_runs=runs, monitor_elements=me, models=model,
              false_flag_rate=false_flag_rate, epochs=epochs,
              holdout_fraction=holdout_fraction)
    if model and len(model) == 1:
        kw["model"] = model[0]
    dqm, cl = _configs(config, executor, workers, **kw)
    with _user_errors(), open_cluster(cl) as cluster:
        calib = workflow.train(store, out, dqm, cluster)
    for kind, per_me in calib["models"].items():
        for name, info in per_me.items():
            t = info["threshold"]
            typer.echo(f"{kind:5s} {name:20s} threshold {t['threshold']:.3g} ({t['method']}, "
                       f"{info['n_holdout']} held-out GOOD LSs)")
        c = calib["combined"][kind]
        typer.echo(f"{kind:5s} combined (any ME) joint threshold {c['threshold']:.3g} ({c['method']}, "
                   f"{c['n_holdout']} held-out GOOD LSs)")
    typer.echo(f"wrote {out / workflow.CALIBRATION}")


@app.command("score")
def score_cmd(
    store: StoreOpt,
    models: Annotated[Path, typer.Option("--models", help="Folder written by `lhcad dqm train`.")],
    config: ConfigOpt = None,
    executor: ExecOpt = None,
    workers: WorkersOpt = None,
) -> None:
    """Score every LS with every trained AE (Dask tasks over runs) into lumi/<ME>/scores/<model>."""
    from lhcad.cluster import open_cluster
    from lhcad.dqm import workflow

    _check_store(store)
    _, cl = _configs(config, executor, workers)
    with _user_errors(), open_cluster(cl) as cluster:
        written = workflow.score(store, models, cluster)
    for key, n in written.items():
        typer.echo(f"{key}: {n} LSs scored")


@app.command("certify")
def certify_cmd(
    store: StoreOpt,
    models: Annotated[Path, typer.Option("--models", help="Folder written by `lhcad dqm train`.")],
    out: OutOpt,
    lumi_csv: Annotated[Optional[str], typer.Option(help="brilcalc per-LS CSV for the luminosity.")] = None,
    model: Annotated[Optional[str], typer.Option(help="Which AE's flags certify (dense | lstm).")] = None,
    run_test: Annotated[Optional[str], typer.Option(help="Run-level test vs the GOOD reference: chi2 | ks.")] = None,
    config: ConfigOpt = None,
) -> None:
    """Flag LSs, test the rest of each run against the reference → GOOD/RECOVERED/BAD, golden JSON."""
    from lhcad.dqm import workflow

    _check_store(store)
    calib = workflow.load_calibration(models)
    dqm, _ = _configs(config, None, None, models=list(calib["models"]), model=model,
                      false_flag_rate=calib["false_flag_rate"], run_test=run_test)
    if dqm.model not in calib["models"]:
        dqm = dqm.model_copy(update={"model": next(iter(calib["models"]))})
    with _user_errors():
        report = workflow.certify(store, models, out, dqm, lumi_csv=lumi_csv)
    typer.echo(f"runs: {report['verdicts']}  (model {dqm.model}; per ME: {report['verdicts_per_me']})")
    if "lumi" in report:
        lu = report["lumi"]
        typer.echo(f"certified {lu['certified_pb']:.3f} /pb, recovered {lu['recovered_pb']:.3f} /pb")
    typer.echo(f"golden JSON: {report['artefacts']['certification']}")


@app.command("lumi")
def lumi_cmd(
    golden: Annotated[str, typer.Option("--json", help="Golden JSON (CMS format).")],
    csv: Annotated[str, typer.Option("--csv", help="brilcalc per-LS CSV (/pb).")],
    runs: Annotated[Optional[str], typer.Option(help="Run range FIRST-LAST (inclusive).")] = None,
) -> None:
    """Recorded luminosity of the LSs a golden JSON certifies (coffea LumiMask + LumiData)."""
    from lhcad.cli import UsageError
    from lhcad.dqm.lumi import certified_lumi

    rng = None
    if runs:
        try:
            a, b = (int(x) for x in runs.split("-"))
        except ValueError:
            raise UsageError(f"--runs: expected FIRST-LAST, got {runs!r}") from None
        rng = (a, b)
    value = certified_lumi(golden, csv, rng)
    typer.echo(json.dumps({"json": golden, "csv": csv, "runs": runs, "recorded_pb": value}))
