"""``lhcad deploy firmware``: QKeras QAT + pruning → hls4ml HLS project → g++ C-sim check."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(help="L1 firmware artefacts: QKeras QAT + pruning, hls4ml project, C-sim bit-accuracy check.",
                  no_args_is_help=True)


@app.callback()
def _group() -> None:
    """L1 firmware artefacts (TensorFlow/QKeras/hls4ml from the `deploy` extra)."""


@app.command("firmware")
def firmware_cmd(
    model: Annotated[Path, typer.Option("--model", help="Saved L1 model (vae.pt or ae.pt from `lhcad l1 train`).")],
    out: Annotated[Path, typer.Option("--out", help="Output directory for the firmware bundle.")],
    store: Annotated[str, typer.Option("--store", help="Zarr store with l1/ (QAT and check events).")] = "results/store.zarr",
    weight_bits: Annotated[int | None, typer.Option(help="Weight/bias bits (default: automatic, see --bits-target-spearman).")] = None,
    integer_bits: Annotated[int | None, typer.Option(help="Weight integer bits, sign excluded (default: per layer from the float weight ranges).")] = None,
    activation_bits: Annotated[int | None, typer.Option(help="ReLU output bits (default: automatic).")] = None,
    activation_integer_bits: Annotated[int | None, typer.Option(help="ReLU integer bits (default: per layer from the float activation ranges).")] = None,
    input_bits: Annotated[int | None, typer.Option(help="Input ap_fixed width (default: automatic).")] = None,
    input_integer_bits: Annotated[int | None, typer.Option(help="Input ap_fixed integer bits incl. sign (default: from the input range).")] = None,
    output_bits: Annotated[int, typer.Option(help="Output bits (saturating quantized_bits on mu / the reconstruction).")] = 18,
    bits_target_spearman: Annotated[float, typer.Option(help="Automatic bits: cheapest (weight, activation, input) rung whose "
                                                        "post-training-quantised network reaches this Spearman vs float on background.")] = 0.99,
    output_integer_bits: Annotated[int | None, typer.Option(help="Output integer bits, sign excluded (default: float range + 2).")] = None,
    scale_output: Annotated[bool, typer.Option(help="Scale the VAE mu layer to unit RMS on background (same ranking) before quantising.")] = True,
    standardise_inputs: Annotated[bool, typer.Option(help="VAE without saved standardisation: fold the input RMS into the first layer (a standardised VAE uses its own scale).")] = True,
    sparsity: Annotated[float, typer.Option(help="Target pruning sparsity.")] = 0.5,
    qat_epochs: Annotated[int, typer.Option(help="QAT epochs.")] = 10,
    qat_events: Annotated[int, typer.Option(help="Training events for QAT.")] = 200_000,
    check_events: Annotated[int, typer.Option(help="Background events for the C-sim check (>= 10k).")] = 20_000,
    reuse_factor: Annotated[int, typer.Option(help="hls4ml reuse factor.")] = 1,
    part: Annotated[str, typer.Option(help="FPGA part.")] = "xcvu9p-flga2104-2L-e",
    clock_period: Annotated[float, typer.Option(help="Clock period in ns.")] = 5.0,
) -> None:
    """Re-train the chosen encoder with QAT + pruning, convert with hls4ml, compile and check the C-sim."""
    from lhcad.cli import UsageError
    from lhcad.config import DeployConfig, validate
    from lhcad.log import console
    from lhcad.store import StoreError

    cfg = validate({"model": "vae" if "vae" in model.stem else "ae", "weight_bits": weight_bits,
                    "integer_bits": integer_bits, "activation_bits": activation_bits,
                    "activation_integer_bits": activation_integer_bits, "input_bits": input_bits,
                    "input_integer_bits": input_integer_bits, "output_bits": output_bits,
                    "output_integer_bits": output_integer_bits, "bits_target_spearman": bits_target_spearman, "scale_output": scale_output, "standardise_inputs": standardise_inputs, "sparsity": sparsity, "qat_epochs": qat_epochs,
                    "qat_events": qat_events, "check_events": check_events, "reuse_factor": reuse_factor,
                    "part": part, "clock_period_ns": clock_period}, "lhcad deploy firmware", DeployConfig)
    if not model.is_file():
        raise UsageError(f"{model}: model file not found")
    from lhcad.deploy.firmware import build_firmware

    try:
        rep = build_firmware(model, store, out, cfg)
    except (ValueError, StoreError, FileNotFoundError) as exc:
        raise UsageError(str(exc).strip("'\"")) from None
    acc = rep["accuracy"]
    console.print(json.dumps({
        "sparsity": round(rep["sparsity"]["pruned"]["total"], 4), "flops": rep["flops"]["dense"],
        "flops_nonzero": rep["flops"]["nonzero"], "dsp_upper_bound": rep["resources"]["dsp_upper_bound"],
        "latency_estimate": f"{rep['latency']['cycles']} cycles = {rep['latency']['ns']} ns",
        "max_abs_delta_score": acc["max_abs_delta_score_hls_vs_qkeras"],
        "spearman_hls_vs_qkeras": round(acc["spearman_hls_vs_qkeras"], 6),
        "spearman_qkeras_vs_float": round(acc["spearman_qkeras_vs_float"], 4),
        "tpr_at_fpr": acc["fpr_for_tpr"],
        "tpr_hls_over_qkeras": {s: t["hls_over_qkeras"] for s, t in acc["tpr"].items()},
        "tpr_qkeras_over_float": {s: t["qkeras_over_float"] for s, t in acc["tpr"].items()},
        "output_scale": round(rep["rescaling"]["output_scale"], 3)}, indent=1))
    console.print(f"firmware report: {rep['artefacts']['firmware_report']}")
