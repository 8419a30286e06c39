"""``lhcad stats``: fit, scan and limits on the m_jj spectrum in a Zarr store."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

app = typer.Typer(
    help="m_jj fits, sliding-window bump hunt (pyhf q0 + pyBumpHunter) and pyhf CLs limits.",
    no_args_is_help=True,
)

StoreArg = Annotated[str, typer.Argument(help="Zarr store (path or fsspec URL) with a dijet/ table.")]
ConfigOpt = Annotated[
    Optional[Path], typer.Option("--config", "-c", help="Pipeline YAML: its 'stats' and 'cluster' blocks are used.")
]
OutOpt = Annotated[Path, typer.Option("--out", "-o", help="Directory for JSON results and plots.")]


def _settings(config: Path | None, **overrides):
    """StatsConfig (+ ClusterConfig) from the YAML with command-line overrides applied and validated."""
    from lhcad import config as _config

    base = _config.load(config) if config else _config.PipelineConfig()
    data = base.stats.model_dump()
    data.update({k: v for k, v in overrides.items() if v is not None})
    stats = _config.validate({"stats": data}, str(config or "<command line>")).stats
    return stats, (base.cluster if config else None)


def _cluster(cluster_cfg):
    import contextlib

    from lhcad.cluster import open_cluster

    return open_cluster(cluster_cfg) if cluster_cfg is not None else contextlib.nullcontext(None)


def _floats(text: str | None, name: str) -> list[float] | None:
    from lhcad.cli import UsageError

    if text is None:
        return None
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise UsageError(f"{name}: expected comma-separated numbers, got {text!r}") from None


def _print_table(rows: list[dict], title: str) -> None:
    from rich.table import Table

    from lhcad.log import console

    table = Table(title=title)
    for col in rows[0]:
        table.add_column(col)
    for r in rows:
        table.add_row(*(f"{v:.3g}" if isinstance(v, float) else str(v) for v in r.values()))
    console.print(table)


@app.command("scan")
def scan_command(
    store: StoreArg,
    config: ConfigOpt = None,
    out: OutOpt = Path("results/stats"),
    method: Annotated[Optional[str], typer.Option(help="AD method of the scores ('none': no selection).")] = None,
    score_key: Annotated[Optional[str], typer.Option(help="One score key for every window (default: per window).")] = None,
    efficiencies: Annotated[Optional[str], typer.Option(help="Comma-separated top-ε values, e.g. 0.1,0.01.")] = None,
    toys: Annotated[Optional[int], typer.Option(help="Pseudo-experiments for the global significance.")] = None,
    dataset: Annotated[Optional[str], typer.Option(help="dijet dataset to search.")] = None,
) -> None:
    """Sliding-window bump hunt: top-ε selection, sideband fit, local pyhf q0 p-value, global significance."""
    from lhcad.log import console
    from lhcad.stats.stage import run_scan, summary_table

    cfg, cl = _settings(config, score=method, score_key=score_key, efficiencies=_floats(efficiencies, "--efficiencies"),
                        toys=toys, dataset=dataset)
    with _cluster(cl) as cluster:
        res = run_scan(store, cfg, out, cluster)
    _print_table(summary_table(res), f"lhcad stats scan {store}")
    for eps, g in res["global"].items():
        best = res["best"][eps]
        console.print(f"ε={eps}: most significant SR {best['sr'][0]:.0f}-{best['sr'][1]:.0f} GeV, local "
                      f"{best['significance']:.2f}σ, global {g['significance']:.2f}σ ({g['note']})")
    console.print(f"results: {res['json']}")


@app.command("fit")
def fit_command(
    store: StoreArg,
    config: ConfigOpt = None,
    out: OutOpt = Path("results/stats"),
    sr: Annotated[Optional[tuple[float, float]], typer.Option(help="Exclude this SR (lo hi, GeV): sideband fit.")] = None,
    score_key: Annotated[Optional[str], typer.Option(help="Score key for a top-ε selection.")] = None,
    efficiency: Annotated[float, typer.Option(help="Top-ε selection (1: no selection).")] = 1.0,
    npar: Annotated[Optional[int], typer.Option(help="Fix the function (3, 4, 5); default: F-test choice.")] = None,
    dataset: Annotated[Optional[str], typer.Option(help="dijet dataset to fit.")] = None,
) -> None:
    """Fit the dijet functions to the m_jj spectrum (Poisson likelihood, F-test choice, χ²/ndf, pulls)."""
    from lhcad.cli import UsageError
    from lhcad.log import console
    from lhcad.stats.stage import run_fit

    if npar is not None and npar not in (3, 4, 5):
        raise UsageError(f"--npar: {npar} is not one of 3, 4, 5")
    if not 0 < efficiency <= 1:
        raise UsageError(f"--efficiency: {efficiency} must be in (0, 1]")
    if efficiency < 1 and score_key is None:
        raise UsageError("--efficiency < 1 needs --score-key (which score to cut on)")
    cfg, _ = _settings(config, dataset=dataset)
    try:
        res = run_fit(store, cfg, out, tuple(sr) if sr else None, score_key, efficiency, npar)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    best = res["fits"][str(res["chosen_npar"])]
    console.print(f"chosen {res['chosen_npar']}-parameter function (F-test p-values {res['f_test_p_values']}); "
                  f"χ²/ndf = {best['chi2']:.1f}/{best['ndf']}")
    console.print(f"results: {res['json']}")


@app.command("limits")
def limits_command(
    store: StoreArg,
    config: ConfigOpt = None,
    out: OutOpt = Path("results/stats"),
    masses: Annotated[Optional[str], typer.Option(help="Comma-separated signal masses in GeV.")] = None,
    toys: Annotated[Optional[int], typer.Option(help="Toys per μ point for toy-based limits (0: asymptotic).")] = None,
    score_key: Annotated[Optional[str], typer.Option(help="Score key for a top-ε selection.")] = None,
    efficiency: Annotated[Optional[float], typer.Option(help="Top-ε selection of the limit spectrum.")] = None,
    luminosity: Annotated[Optional[float], typer.Option(help="fb⁻¹: limits on σ in fb instead of events.")] = None,
    dataset: Annotated[Optional[str], typer.Option(help="dijet dataset.")] = None,
) -> None:
    """95 % CLs upper limits (asymptotic, optionally toys) with ±1σ/±2σ bands and a Brazil plot."""
    from lhcad.log import console
    from lhcad.stats.stage import run_limits

    cfg, cl = _settings(config, limit_masses=_floats(masses, "--masses"), limit_toys=toys,
                        limit_efficiency=efficiency, luminosity=luminosity, dataset=dataset)
    with _cluster(cl) as cluster:
        res = run_limits(store, cfg, out, cluster, score_key)
    rows = [{"mass": r["mass"], "observed": r["observed"], **{f"exp {k}": v for k, v in r["expected"].items()}}
            for r in res["limits"]]
    _print_table(rows, f"95% CLs upper limits [{res['unit']}]")
    console.print(f"results: {res['json']}")
