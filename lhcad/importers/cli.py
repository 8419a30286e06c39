"""``lhcad import``: read the public LHCO R&D and ADC2021 benchmark files into a Zarr store."""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(
    help="Import public AD benchmark files (LHC Olympics 2020 R&D features, ADC2021) into a Zarr store.",
    no_args_is_help=True,
)


class LabelAs(str, Enum):
    truth = "truth"
    none = "none"


def _report(summary: dict, out: Path, json_path: Path | None) -> None:
    typer.echo(
        f"{summary['table']}/ dataset {summary['dataset']!r}: {summary['rows']} rows from "
        f"{len(summary['files'])} file(s) → {out} ({summary['n_rows']} rows in {summary['table']}/)"
    )
    for f in summary["files"]:
        kept = f" ({f['stored']} pass the cuts)" if "stored" in f else ""
        typer.echo(f"  {f['path']}  {f['rows']} rows{kept}  sha256 {f['sha256'][:16]}…")
    if json_path is not None:
        json_path.write_text(json.dumps(summary, indent=1))


Files = Annotated[list[Path], typer.Argument(help="Input .h5 files.", show_default=False)]
Out = Annotated[Path, typer.Option("--out", "-o", help="Zarr store to write (created if missing, appended to otherwise).")]
ChunkRows = Annotated[int, typer.Option("--chunk-rows", min=1, help="Rows read and written per step (bounds memory).")]
JsonOut = Annotated[Path | None, typer.Option("--json", help="Also write the import summary as JSON here.")]


@app.command("lhco")
def lhco_command(
    files: Files,
    out: Out,
    dataset: Annotated[str, typer.Option("--dataset", "-d", help="Dataset name in dijet/ (data, extra_bkg, test, ...).")] = "data",
    label_as: Annotated[LabelAs, typer.Option("--label-as", help="Use the file's 'label' column as truth_label ('truth') or ignore it ('none': truth_label = -1).")] = LabelAs.truth,
    key: Annotated[str | None, typer.Option("--key", help="pandas key when a file holds several tables.")] = None,
    preselect: Annotated[bool, typer.Option("--preselect", help="Keep only events passing the dijet processor's cuts (defaults of `lhcad process dijet`; the jet-ID cut cannot be applied).")] = False,
    pt_min: Annotated[float | None, typer.Option(help="With --preselect: AK8 jet pT threshold, GeV (default 300).")] = None,
    eta_max: Annotated[float | None, typer.Option(help="With --preselect: |eta| limit (default 2.5).")] = None,
    delta_eta_max: Annotated[float | None, typer.Option(help="With --preselect: |Δη| limit (default 1.3).")] = None,
    mjj_min: Annotated[float | None, typer.Option(help="With --preselect: m_jj threshold, GeV (default 1200).")] = None,
    chunk_rows: ChunkRows = 262_144,
    json_out: JsonOut = None,
) -> None:
    """LHC Olympics 2020 R&D high-level features (pandas HDF5) → dijet/.

    Example: lhcad import lhco events_anomalydetection_v2.features.h5 --out lhco.zarr, then
    lhcad import lhco events_anomalydetection_qcd_extra_inneronly_features.h5 --out lhco.zarr
    --dataset extra_bkg.
    """
    from lhcad.importers import import_lhco

    given = {k: v for k, v in {"pt_min": pt_min, "eta_max": eta_max, "delta_eta_max": delta_eta_max,
                               "mjj_min": mjj_min}.items() if v is not None}
    if given and not preselect:
        from lhcad.cli import UsageError

        raise UsageError(f"--{next(iter(given)).replace('_', '-')} needs --preselect")
    cuts = given if preselect else None
    summary = import_lhco(files, str(out), dataset=dataset, label_as_truth=label_as is LabelAs.truth,
                          chunk_rows=chunk_rows, key=key, cuts=cuts)
    _report(summary, out, json_out)


@app.command("adc2021")
def adc2021_command(
    files: Files,
    out: Out,
    dataset: Annotated[str, typer.Option("--dataset", "-d", help="Dataset name in l1/ (sm, ato4l, lq_btau, h0_tautau, hch_taunu, blackbox).")],
    key: Annotated[list[str] | None, typer.Option("--key", help="HDF5 dataset(s) to read (default: Particles, else X_train/X_test/X_val/Data). Repeatable.")] = None,
    truth_label: Annotated[int | None, typer.Option("--truth-label", help="truth_label of every event (default: 0 for background names, -1 for blackbox*, else 1).")] = None,
    chunk_rows: ChunkRows = 131_072,
    json_out: JsonOut = None,
) -> None:
    """ADC2021 'Particles' (N, 19, 4) files or the example code's (N, 57) files → l1/.

    Example: lhcad import adc2021 background_for_training.h5 --out adc.zarr --dataset sm.
    """
    from lhcad.importers import import_adc2021

    summary = import_adc2021(files, str(out), dataset=dataset, chunk_rows=chunk_rows, keys=key or None,
                             truth_label=truth_label)
    _report(summary, out, json_out)
