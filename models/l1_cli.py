"""``lhcad l1``: train, score and evaluate the L1 trigger AD models (ADC2021 metrics)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(help="L1 trigger AD: dense AE, VAE (μ² score), IN-VAE; ADC2021 metrics.", no_args_is_help=True)

_Store = Annotated[str, typer.Option("--store", help="Zarr store with the l1/ table.")]
_Models = Annotated[Path, typer.Option("--models", help="Directory of saved L1 models (from `lhcad l1 train`).")]


def _usage(exc: Exception):
    from lhcad.cli import UsageError

    return UsageError(str(exc).strip("'\""))


@app.command("train")
def train_cmd(
    store: _Store,
    out: Annotated[Path, typer.Option("--out", help="Directory for the saved models and the split.")],
    models: Annotated[str, typer.Option("--models", help="Comma-separated: ae, ae_std, vae, invae.")] = "ae,vae",
    epochs: Annotated[int, typer.Option(min=1, help="Training epochs.")] = 20,
    train_fraction: Annotated[float, typer.Option(help="Share of the 'sm' background used for training.")] = 0.5,
    max_train: Annotated[int | None, typer.Option(min=1, help="Cap on training events per model.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the split and the training.")] = 0,
    batch_size: Annotated[int | None, typer.Option(min=1, help="Minibatch size (default: each model's own).")] = None,
    vae_standardise: Annotated[bool, typer.Option("--vae-standardise/--no-vae-standardise",
                                                  help="Standardise the VAE encoder input (the issue-9 recipe).")] = True,
) -> None:
    """Train the L1 models on the store's 'sm' background (the held-out part is kept for evaluation)."""
    from lhcad.log import console
    from lhcad.models import l1_jobs
    from lhcad.store import StoreError

    names = [m.strip() for m in models.split(",") if m.strip()]
    try:
        paths = l1_jobs.train(store, out, names, epochs=epochs, train_fraction=train_fraction,
                              max_train=max_train, seed=seed,
                              params=_params(names, batch_size, vae_standardise))
    except (ValueError, StoreError, FileNotFoundError) as exc:
        raise _usage(exc) from None
    for name, path in paths.items():
        console.print(f"{name}: {path}")


def _params(names: list[str], batch_size: int | None, vae_standardise: bool) -> dict:
    params: dict = {n: ({"batch_size": batch_size} if batch_size else {}) for n in names}
    if "vae" in params:
        params["vae"]["standardise"] = vae_standardise
    return params


@app.command("score")
def score_cmd(store: _Store, models: _Models) -> None:
    """Write every model's scores for all l1 rows into the store (l1/scores/<model>__<kind>)."""
    from lhcad.log import console
    from lhcad.models import l1_jobs
    from lhcad.store import StoreError

    try:
        written = l1_jobs.score(store, models)
    except (ValueError, StoreError, FileNotFoundError) as exc:
        raise _usage(exc) from None
    for name, kinds in written.items():
        console.print(f"{name}: " + ", ".join(f"l1/scores/{name}__{k}" for k in kinds))


@app.command("evaluate")
def evaluate_cmd(
    store: _Store,
    models: _Models,
    out: Annotated[Path | None, typer.Option("--out", help="Directory for plots, JSON, black-box h5.")] = None,
    fpr: Annotated[list[float], typer.Option("--fpr", help="FPR(s) for the TPR table (repeatable).")] = [1e-5],  # noqa: B006
    json_path: Annotated[Path | None, typer.Option("--json", help="Also write the metrics JSON here.")] = None,
    blackbox_score: Annotated[str, typer.Option(help="Score ranking the black box (e.g. vae_mu2, ae).")] = "vae_mu2",
) -> None:
    """AUC and TPR at FPR (binomial errors) per model and signal, FLOPs, ROC/latent plots, black box."""
    from rich.table import Table

    from lhcad.log import console
    from lhcad.models import l1_jobs
    from lhcad.store import StoreError

    try:
        res = l1_jobs.evaluate(store, models, out, fprs=tuple(fpr), blackbox_score=blackbox_score)
    except (ValueError, StoreError, FileNotFoundError) as exc:
        raise _usage(exc) from None
    table = Table(title=f"L1 AD — TPR at FPR = {min(fpr):g} (held-out background: {res['n_background_test']})")
    for col in ("score", "signal", "AUC", "TPR"):
        table.add_column(col)
    for row in l1_jobs.summary_table(res, min(fpr)):
        table.add_row(*row)
    console.print(table)
    for name, f in res["flops"].items():
        console.print(f"FLOPs {name}: {f['flops']} ({f['deployed']})")
    if json_path:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(res, indent=1, default=float))
