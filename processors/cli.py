"""``lhcad process dijet|lumi|l1``: run one processor over a fileset into a Zarr store."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Literal

import typer

app = typer.Typer(
    help="coffea processors → Zarr feature store (dijet features, per-LS histograms, L1 objects).",
    no_args_is_help=True,
)

Executor = Literal["iterative", "futures", "dask-local", "dask-address"]

FilesetOpt = Annotated[Path, typer.Option("--fileset", "-f", help="coffea fileset JSON (local paths or root:// URLs).")]
OutOpt = Annotated[str, typer.Option("--out", "-o", help="Zarr store (path or fsspec URL); the table is rebuilt.")]
ExecOpt = Annotated[str, typer.Option("--executor", "-e", help="iterative | futures | dask-local | dask-address.")]
WorkersOpt = Annotated[int, typer.Option("--workers", "-w", min=1, help="Workers (futures, dask-local).")]
ChunkOpt = Annotated[int | None, typer.Option("--chunksize", min=1, help="Events per chunk (default: config, 200000).")]
AddrOpt = Annotated[str | None, typer.Option("--address", help="Scheduler address for dask-address.")]
SkipOpt = Annotated[bool, typer.Option("--skipbadfiles/--no-skipbadfiles",
                                       help="Record bad files/chunks in the manifest instead of failing.")]
ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="Pipeline YAML whose `process:` section sets options.")]
JsonOpt = Annotated[Path | None, typer.Option("--summary-json", help="Write the run summary here.")]


def _run(table: str, fileset: Path, out: str, executor: str, workers: int, chunksize: int | None,
         address: str | None, skipbadfiles: bool | None, config: Path | None, summary_json: Path | None,
         overrides: dict) -> None:
    from lhcad import config as _config
    from lhcad.cli import UsageError
    from lhcad.log import console

    from .runner import process

    if executor not in Executor.__args__:
        raise UsageError(f"--executor {executor!r}: choose from {', '.join(Executor.__args__)}")
    pcfg = _config.load(config).process if config else _config.ProcessConfig()
    try:
        cluster = _config.ClusterConfig(type=executor, workers=workers, address=address)
    except Exception as exc:  # pydantic validation: one line
        raise UsageError(f"--executor {executor}: {exc.errors()[0]['msg'] if hasattr(exc, 'errors') else exc}") from None
    options = pcfg.options(table)
    options.update({k: v for k, v in overrides.items() if v is not None})
    summary = process(
        table, fileset, out, cluster=cluster, chunksize=chunksize or pcfg.chunksize,
        skipbadfiles=pcfg.skipbadfiles if skipbadfiles is None else skipbadfiles,
        treename=pcfg.treename, options=options,
    )
    if summary_json:
        summary_json.write_text(json.dumps(summary, indent=1))
    console.print(
        f"{table}: {summary['events_processed']} events processed, {summary['events_skipped']} skipped, "
        f"{summary['rows']} {'LS' if table == 'lumi' else 'rows'} → {out}/{table} "
        f"({summary['chunks_run']} chunks run, {summary['chunks_reused']} reused, {summary['wall_s']:.1f} s)"
    )
    for row in summary["skipped"]:
        console.print(f"[yellow]skipped[/] {row['events']} events: {row['reason']}", highlight=False)


@app.command("dijet")
def dijet(
    fileset: FilesetOpt, out: OutOpt, executor: ExecOpt = "iterative", workers: WorkersOpt = 2,
    chunksize: ChunkOpt = None, address: AddrOpt = None, skipbadfiles: SkipOpt = None, config: ConfigOpt = None,
    summary_json: JsonOpt = None,
    pt_min: Annotated[float | None, typer.Option(help="AK8 jet pT threshold, GeV (default 300).")] = None,
    eta_max: Annotated[float | None, typer.Option(help="|eta| limit (default 2.5).")] = None,
    delta_eta_max: Annotated[float | None, typer.Option(help="|Δη| limit (default 1.3).")] = None,
    mjj_min: Annotated[float | None, typer.Option(help="m_jj threshold, GeV (default 1200).")] = None,
    jet_id: Annotated[int | None, typer.Option(help="FatJet_jetId bits required (default 2; 0 = none).")] = None,
) -> None:
    """Dijet preselection → per-event features in `dijet/` (jets ordered by mass, j1 lighter)."""
    _run("dijet", fileset, out, executor, workers, chunksize, address, skipbadfiles, config, summary_json,
         {"pt_min": pt_min, "eta_max": eta_max, "delta_eta_max": delta_eta_max, "mjj_min": mjj_min, "jet_id": jet_id})


@app.command("lumi")
def lumi(
    fileset: FilesetOpt, out: OutOpt, executor: ExecOpt = "iterative", workers: WorkersOpt = 2,
    chunksize: ChunkOpt = None, address: AddrOpt = None, skipbadfiles: SkipOpt = None, config: ConfigOpt = None,
    summary_json: JsonOpt = None,
) -> None:
    """Per-(run, LS) histograms of the monitor elements (config `process.monitor_elements`) in `lumi/`."""
    _run("lumi", fileset, out, executor, workers, chunksize, address, skipbadfiles, config, summary_json, {})


@app.command("l1")
def l1(
    fileset: FilesetOpt, out: OutOpt, executor: ExecOpt = "iterative", workers: WorkersOpt = 2,
    chunksize: ChunkOpt = None, address: AddrOpt = None, skipbadfiles: SkipOpt = None, config: ConfigOpt = None,
    summary_json: JsonOpt = None,
    lepton_filter: Annotated[bool | None, typer.Option("--lepton-filter/--no-lepton-filter",
                                                       help="Keep only events with >= 1 e or mu.")] = None,
    quantise: Annotated[bool, typer.Option("--quantise", help="Quantise pT/eta/phi (10/8/8 bits).")] = False,
) -> None:
    """MET + 4 e + 4 μ + 10 jets (pT, η, φ) per event in `l1/particles` (N, 19, 3)."""
    over: dict = {"lepton_filter": lepton_filter}
    if quantise:
        over["quantise_bits"] = {"pt": 10, "eta": 8, "phi": 8}
    _run("l1", fileset, out, executor, workers, chunksize, address, skipbadfiles, config, summary_json, over)
