"""``lhcad generate dijet|dqm|l1``: synthetic NanoAOD with known truth (thin layer over the library)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from lhcad.config import ConfigError, GenerateDijetConfig, GenerateDQMConfig, GenerateL1Config, validate
from lhcad.log import console

app = typer.Typer(
    help="Synthetic Run 2 NanoAOD with known truth: dijet (+ resonance), DQM runs with faults, L1 mix.",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)

OutOpt = Annotated[Path, typer.Option("--out", "-o", help="Output directory (created; *.root, fileset.json, truth.json).")]
SeedOpt = Annotated[int | None, typer.Option("--seed", help="Random seed: same seed and options -> same content.")]
PerFileOpt = Annotated[int | None, typer.Option("--events-per-file", help="Split the output into files of this many events.")]


def _floats(text: str | None, what: str, n: int) -> tuple[float, ...] | None:
    if text is None:
        return None
    try:
        values = tuple(float(v) for v in text.replace(" ", "").split(","))
    except ValueError:
        raise ConfigError(f"{what}: expected {n} comma-separated numbers (got {text!r})") from None
    if len(values) != n:
        raise ConfigError(f"{what}: expected {n} comma-separated numbers (got {text!r})")
    return values


def _config(model, source: str, **values):
    """Validate CLI values with the same pydantic model as the YAML config (one error line each)."""
    return validate({k: v for k, v in values.items() if v is not None}, source, model)


@app.command("dijet")
def dijet_command(
    events: Annotated[int, typer.Option("--events", "-n", help="QCD background events in the 'data' dataset.")],
    out: OutOpt,
    seed: SeedOpt = None,
    signal: Annotated[str | None, typer.Option("--signal", help="Signal name (see `lhcad generate signals`).")] = None,
    signal_mass: Annotated[float | None, typer.Option("--signal-mass", help="M_A in GeV.")] = None,
    daughter_masses: Annotated[str | None, typer.Option("--daughter-masses", help="Masses of B,C in GeV, e.g. 500,100.")] = None,
    signal_events: Annotated[int | None, typer.Option("--signal-events", help="Signal events injected into 'data'.")] = None,
    s_over_b: Annotated[float | None, typer.Option("--s-over-b", help="S/B in the SR window (|Δη|<1.3) instead of --signal-events.")] = None,
    sr: Annotated[str | None, typer.Option("--sr", help="Signal-region m_jj window in GeV (default 3300,3700).")] = None,
    extra_background: Annotated[int | None, typer.Option("--extra-background", help="SR-only QCD events -> dataset 'extra_bkg'.")] = None,
    test_events: Annotated[int | None, typer.Option("--test-events", help="Labelled SR events (80% QCD, 20% signal) -> dataset 'test'.")] = None,
    trigger_pt: Annotated[float | None, typer.Option("--trigger-pt", help="Keep events whose leading AK8 jet has pT above this (GeV).")] = None,
    events_per_file: PerFileOpt = None,
    lhco_h5: Annotated[Path | None, typer.Option("--lhco-h5", help="Also write the LHC Olympics R&D feature table (pandas HDF5).")] = None,
) -> None:
    """QCD dijet events + an injected A → B C resonance (LHC Olympics-like) as NanoAOD."""
    from lhcad.generate.dijet_output import generate_dijet

    cfg = _config(
        GenerateDijetConfig, "lhcad generate dijet",
        events=events, seed=seed, signal=signal, signal_mass=signal_mass,
        daughter_masses=_floats(daughter_masses, "--daughter-masses", 2), signal_events=signal_events,
        s_over_b=s_over_b, sr=_floats(sr, "--sr", 2), extra_background=extra_background,
        test_events=test_events, trigger_pt=trigger_pt, events_per_file=events_per_file,
    )
    truth = generate_dijet(cfg, out, lhco_h5=lhco_h5)
    for name, d in truth["datasets"].items():
        console.print(f"{name}: {d['events']} events ({d['signal']} signal) in {len(d['files'])} file(s)")
    console.print(f"fileset: {Path(out) / 'fileset.json'}   truth: {Path(out) / 'truth.json'}")


@app.command("signals")
def signals_command() -> None:
    """List the registered dijet signals with their default masses and prong patterns."""
    from lhcad.generate.signals import SIGNALS

    for sig in SIGNALS.values():
        pattern = " + ".join(
            f"{d.name}({'q' if d.mass is None else f'{d.mass:g}'}: {d.prongs} prong{'s' if d.prongs > 1 else ''}"
            f"{f', {d.b}b' if d.b else ''}{f', ℓ {d.lepton_fraction:.0%}' if d.lepton_fraction else ''})"
            for d in sig.daughters
        )
        console.print(f"{sig.name:16s} M_A = {sig.mass:g} GeV  {pattern}   [{sig.title}]", highlight=False)


@app.command("l1")
def l1_command(
    events: Annotated[int, typer.Option("--events", "-n", help="Standard-Model events (dataset 'sm').")],
    out: OutOpt,
    seed: SeedOpt = None,
    signal_events: Annotated[int | None, typer.Option("--signal-events", help="Events of each BSM signal (default 20000).")] = None,
    blackbox_events: Annotated[int | None, typer.Option("--blackbox-events", help="Events of the black-box mixture (0: none).")] = None,
    events_per_file: PerFileOpt = None,
    h5: Annotated[Path | None, typer.Option("--h5", help="Also write the ADC2021 h5 layout (Particles (N, 19, 4) per dataset).")] = None,
) -> None:
    """ADC2021-like L1 events: SM mixture (W, Z, tt, QCD; ≥1 lepton), A→4ℓ, LQ→bτ, h0→ττ, h±→τν, black box."""
    from lhcad.generate.l1 import generate_l1

    cfg = _config(GenerateL1Config, "lhcad generate l1", events=events, seed=seed, signal_events=signal_events,
                  blackbox_events=blackbox_events, events_per_file=events_per_file)
    truth = generate_l1(cfg, out, h5=h5)
    for name, d in truth["datasets"].items():
        console.print(f"{name}: {d['events']} events in {len(d['files'])} file(s)")
    if "h5" in truth:
        console.print(f"ADC2021 h5: {truth['h5']}")
    console.print(f"fileset: {Path(out) / 'fileset.json'}   truth: {Path(out) / 'truth.json'}")


@app.command("dqm")
def dqm_command(
    out: OutOpt,
    runs: Annotated[int | None, typer.Option("--runs", help="Number of runs (default 6).")] = None,
    bad_runs: Annotated[int | None, typer.Option("--bad-runs", help="Runs with injected faults (default 2).")] = None,
    ls_per_run: Annotated[int | None, typer.Option("--ls-per-run", help="Typical LS per run (× U(0.7, 1.3)).")] = None,
    events: Annotated[int | None, typer.Option("--events", "-n", help="Expected total events (sets the per-LS rate).")] = None,
    events_per_ls: Annotated[int | None, typer.Option("--events-per-ls", help="Events per LS at the highest luminosity (default 200).")] = None,
    faults: Annotated[str | None, typer.Option("--faults", help="Fault kinds: hot_tower,met_tail,dead_sector,pileup_spike.")] = None,
    severity: Annotated[float | None, typer.Option("--severity", help="Fault severity knob (1 = nominal).")] = None,
    seed: SeedOpt = None,
    events_per_file: PerFileOpt = None,
) -> None:
    """Run 2 runs with per-LS luminosity (brilcalc CSV) and injected detector faults, with per-LS truth."""
    from lhcad.generate.dqm import generate_dqm

    cfg = _config(
        GenerateDQMConfig, "lhcad generate dqm", runs=runs, bad_runs=bad_runs, ls_per_run=ls_per_run,
        events=events, events_per_ls=events_per_ls, faults=None if faults is None else [f for f in faults.split(",") if f],
        severity=severity, seed=seed, events_per_file=events_per_file,
    )
    truth = generate_dqm(cfg, out)
    bad = [r for r, info in truth["runs"].items() if info["status"] == "BAD"]
    console.print(f"dqm: {truth['datasets']['dqm']['events']} events, {len(truth['runs'])} runs, "
                  f"{truth['n_ls']} LS ({truth['n_bad_ls']} faulty in runs {', '.join(bad) or 'none'})")
    console.print(f"fileset: {Path(out) / 'fileset.json'}   truth: {Path(out) / 'truth.json'}   lumi: {Path(out) / 'lumi.csv'}")
