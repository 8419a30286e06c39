"""The deploy stage end to end: saved L1 model → QKeras QAT + pruning → hls4ml project → C-sim check.

:func:`build_firmware` reads the model written by ``lhcad l1 train`` (``ae.pt`` / ``vae.pt``) and the
L1 background from the store, then

1. scales the float μ layer to unit RMS on background (the score Σ(s·μ)² ranks as Σμ²), sets the
   firmware input scale — for a VAE trained with standardised input ((x − m)/s saved with the model)
   the scale ``s`` is unfolded from the first layer (its trained weights come back, the mean offset
   stays exactly in its bias, the firmware reads ``x / s`` from an upstream per-feature scale: see
   ``input_transform`` in the report, with its cost and input saturation counts); otherwise the
   input RMS is folded into the first layer (the firmware reads standardised features) — and derives
   the integer bits of inputs, weights, activations and output from the scaled ranges
   (:mod:`lhcad.deploy.ranges`; explicit bits in the config override); quantises the 57 input features to ``ap_fixed<input_bits, I_in>``;
2. rebuilds the deployed network in QKeras and re-trains it with QAT while pruning to the total
   target sparsity, first-layer first (:func:`lhcad.deploy.ranges.prune_targets`) (:mod:`lhcad.deploy.qat`, :mod:`lhcad.deploy.prune`); training events come from the
   model's training split (``split.npz`` next to the model), checks from its held-out part;
3. converts it with hls4ml (Vitis, ``io_parallel``, Latency), writes and ``compile()`` s the C
   simulation with g++ (:mod:`lhcad.deploy.hls`);
4. compares C-sim vs QKeras (and QKeras vs the float torch model) on ``check_events`` background
   events + the signals in the store: max |Δ score|, Spearman rank correlation, TPR ratios at
   the smallest FPR the check sample supports with ≥ 10 background events above threshold
   (1e-5 needs ≥ 1 M events);
5. writes the bundle: ``hls_project.tar.gz``, ``hls4ml_config.yml``, ``build_vitis.sh``,
   ``qkeras_model.h5`` and ``firmware_report.json`` (bit widths, sparsity, FLOPs, DSP and latency
   *estimates* with their rules, accuracy figures).
"""

from __future__ import annotations

import logging
import math
import platform
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)


def check_fpr(n_bkg: int, min_above: int = 10, target: float = 1e-5) -> float:
    """``target`` if ``n_bkg`` leaves ≥ ``min_above`` background events above threshold, else the
    next power of ten that does."""
    if n_bkg * target >= min_above:
        return target
    return float(10 ** math.ceil(math.log10(min_above / max(n_bkg, 1))))


def _scores(kind: str, out: np.ndarray, x: np.ndarray) -> np.ndarray:
    out = np.asarray(out, dtype=np.float64).reshape(len(x), -1)
    if kind == "mu2":
        return (out**2).sum(1)
    return ((out - x) ** 2).mean(1)


def _tail_spearman(s_float: dict, s_q: dict, quantile: float = 0.99) -> float:
    """Spearman rank correlation restricted to the events above the float model's background
    ``quantile`` (the region a trigger threshold lives in; the bulk ranking does not matter)."""
    from scipy.stats import spearmanr

    thr = np.quantile(s_float["sm"], quantile)
    f, q = np.concatenate(list(s_float.values())), np.concatenate(list(s_q.values()))
    keep = f > thr
    return float(spearmanr(f[keep], q[keep]).statistic) if keep.sum() > 2 else float("nan")


def _resolution(layers, x_float: np.ndarray, kind: str, cfg, fmt: dict, w_int, a_int, o_int, in_int) -> dict:
    """Spread of the (rescaled) float network output on background vs the fixed-point steps: a deployed
    output whose spread is a few LSBs (e.g. a collapsed VAE posterior without rescaling) cannot be ranked."""
    from lhcad.deploy.ranges import forward

    per = lambda v, name: v[name] if isinstance(v, dict) else v  # noqa: E731
    out = forward(layers, x_float[:100_000])[-1]
    return {"weight_lsb": {layer.name: 2.0 ** -(cfg.weight_bits - per(w_int, layer.name) - 1) for layer in layers},
            "activation_lsb": {layer.name: 2.0 ** -(cfg.activation_bits - per(a_int, layer.name))
                               for layer in layers if layer.activation == "relu"},
            "input_lsb": 2.0 ** -(cfg.input_bits - in_int),
            "output_lsb": 2.0 ** -(cfg.output_bits - o_int - 1),
            "float_output_std_background": np.round(out.std(0), 5).tolist(),
            "float_ranges": fmt["ranges"],
            "note": "spread of the deployed float output (after the rescaling) per dimension on background; "
                    "compare with output_lsb"}


def _data(model_path: Path, store: str, cfg, seed: int = 0):
    from lhcad.models.l1_preprocess import BACKGROUND, SIGNALS, split_background
    from lhcad.store import dataset_names, open_store, read_columns

    root = open_store(store, mode="r")
    names = dataset_names(root, "l1")
    if BACKGROUND not in names:
        raise ValueError(f"{store}: l1 has no {BACKGROUND!r} background dataset (have: {names})")
    code = read_columns(root, "l1", ["dataset"])["dataset"]
    split = model_path.parent / "split.npz"
    if split.exists():
        s = np.load(split)
        train_rows, test_rows = s["train_rows"], s["test_rows"]
    else:
        bkg = np.flatnonzero(code == names.index(BACKGROUND))
        tr, te = split_background(len(bkg), 0.5, seed)
        train_rows, test_rows = bkg[tr], bkg[te]
    rng = np.random.default_rng(seed)
    qat_rows = np.sort(rng.choice(train_rows, min(cfg.qat_events, len(train_rows)), replace=False))
    chk_rows = np.sort(rng.choice(test_rows, min(cfg.check_events, len(test_rows)), replace=False))
    sig = {s: np.flatnonzero(code == names.index(s))[: cfg.check_events] for s in SIGNALS if s in names}
    read = lambda rows: np.asarray(read_columns(root, "l1", ["particles"], rows=rows)["particles"])  # noqa: E731
    return read(qat_rows), read(chk_rows), {s: read(r) for s, r in sig.items() if len(r)}


def build_firmware(model_path: str | Path, store: str, out: str | Path, cfg=None) -> dict:
    """Run the deploy stage (module docstring); returns the firmware report dict."""
    from scipy.stats import spearmanr

    from lhcad.config import DeployConfig
    from lhcad.deploy import flops, hls, prune, qat, ranges, report
    from lhcad.log import progress
    from lhcad.models.l1_base import load_model
    from lhcad.models.l1_metrics import tpr_at_fpr
    from lhcad.models.l1_preprocess import quantize_fixed

    cfg = cfg or DeployConfig()
    model_path, out = Path(model_path), Path(out)
    model = load_model(model_path)
    if not hasattr(model, "dense_layers"):
        raise ValueError(f"{model_path}: a {type(model).__name__} cannot be deployed (dense AE or VAE only)")
    kind = model.default_score
    out.mkdir(parents=True, exist_ok=True)
    with progress() as bar:
        task = bar.add_task("deploy firmware", total=5)
        p_train, p_bkg, p_sig = _data(model_path, store, cfg)
        xf_train = model.transform(p_train)
        layers = model.dense_layers()
        # μ head: one ranking-preserving scale so that μ is O(1) on background (an AE's output is compared
        # with its input and keeps its scale)
        out_scale, in_scale = 1.0, np.ones(xf_train.shape[1])
        if cfg.scale_output and kind == "mu2":
            layers, out_scale = ranges.scale_output(layers, xf_train)
        # a VAE trained with standardised input ((x - m) / s, folded into dense1 by dense_layers): unfold the
        # scale (dense1 gets the trained O(1) weights back, the mean offset stays exactly in its bias) and let
        # the firmware read x / s; otherwise fold the background RMS (both: input_transform in the report)
        std = ranges.model_standardisation(model) if kind == "mu2" else None
        if std is not None:
            layers, in_scale = ranges.unfold_input_scale(layers, std[1])
        elif cfg.standardise_inputs and kind == "mu2":  # an AE's score compares output and input: not for it
            layers, in_scale = ranges.standardise_inputs(layers, xf_train)
        xf_train = xf_train / in_scale
        fmt = ranges.formats(layers, xf_train)
        prune_targets = ranges.prune_targets(layers, cfg.sparsity)
        pick = lambda given_bits, auto: auto if given_bits is None else given_bits  # noqa: E731
        in_int, w_int = pick(cfg.input_integer_bits, fmt["input"]), pick(cfg.integer_bits, fmt["weights"])
        a_int, o_int = pick(cfg.activation_integer_bits, fmt["activations"]), pick(cfg.output_integer_bits, fmt["output"])
        # bit widths not given: the cheapest rung whose post-training-quantised network ranks background
        # like the float one (integer bits from the ranges above, fractional bits from this search)
        given = cfg
        bits_search = None
        if None in (cfg.weight_bits, cfg.activation_bits, cfg.input_bits):
            xs = xf_train[:50_000]
            score_fn = (lambda o: (o**2).sum(1)) if kind == "mu2" else (lambda o: ((o - xs) ** 2).mean(1))  # noqa: E731
            fmt_used = {"input": in_int, "output": o_int,
                        "weights": {layer.name: _per(w_int, layer.name) for layer in layers},
                        "activations": {layer.name: _per(a_int, layer.name) for layer in layers if layer.activation == "relu"}}
            (wb, ab, ib), tried = ranges.choose_bits(layers, xs, fmt_used, score_fn, cfg.output_bits, cfg.bits_target_spearman)
            cfg = cfg.model_copy(update={"weight_bits": pick(cfg.weight_bits, wb), "activation_bits": pick(cfg.activation_bits, ab),
                                         "input_bits": pick(cfg.input_bits, ib)})
            bits_search = {"target_spearman_vs_float": cfg.bits_target_spearman, "events": len(xs), "tried": tried,
                           "rule": "post-training quantisation (numpy, before pruning/QAT) of the scaled network; "
                                   "cheapest rung of deploy.ranges.BIT_LADDER reaching the target"}
        q = lambda p: quantize_fixed(model.transform(p) / in_scale, cfg.input_bits, in_int)  # noqa: E731
        x_train = q(p_train)
        # QAT target: the rescaled float encoder output (distillation) / the input (AE objective)
        y_train = ranges.forward(layers, xf_train)[-1] if kind == "mu2" else x_train
        bar.advance(task)
        relu = {layer.name for layer in layers if layer.activation == "relu"}
        qmodel = qat.build(layers, cfg.weight_bits, w_int, cfg.activation_bits, a_int,
                           output_bits=cfg.output_bits, output_integer_bits=o_int)
        qmodel, losses = qat.train(qmodel, x_train, y_train.astype(np.float32), sparsity=prune_targets,
                                   epochs=cfg.qat_epochs, ramp=0.3)
        bar.advance(task)
        hls_cfg = hls.hls4ml_config(qmodel, f"fixed<{cfg.input_bits},{in_int}>", cfg.reuse_factor)
        project = out / "hls_project"
        hm = hls.convert(qmodel, project, hls_cfg, cfg.part, cfg.clock_period_ns)
        bar.advance(task)
        # ---- accuracy: C-sim vs QKeras vs float, on held-out background + signals
        samples = {"sm": p_bkg, **p_sig}
        x_raw = {s: model.transform(p) / in_scale for s, p in samples.items()}
        saturation = {s: ranges.input_saturation(x, cfg.input_bits, in_int) for s, x in x_raw.items()}
        x_chk = {s: quantize_fixed(x, cfg.input_bits, in_int) for s, x in x_raw.items()}
        s_float = {s: model.score_samples(p) for s, p in samples.items()}
        y_q = {s: qmodel.predict(x, batch_size=8192, verbose=0) for s, x in x_chk.items()}
        y_h = {s: np.asarray(hm.predict(np.ascontiguousarray(x))) for s, x in x_chk.items()}
        s_q = {s: _scores(kind, y_q[s], x_chk[s]) for s in samples}
        s_h = {s: _scores(kind, y_h[s], x_chk[s]) for s in samples}
        bar.advance(task)
        allq, allh, allf = (np.concatenate(list(d.values())) for d in (s_q, s_h, s_float))
        fpr = check_fpr(len(p_bkg))
        tpr = {}
        for sig in p_sig:
            res = {name: tpr_at_fpr(d["sm"], d[sig], fpr) for name, d in (("float", s_float), ("qkeras", s_q), ("hls", s_h))}
            t = {name: r["tpr"] for name, r in res.items()}
            t["err"] = {name: r["tpr_err"] for name, r in res.items()}
            t["hls_over_qkeras"] = t["hls"] / t["qkeras"] if t["qkeras"] > 0 else None
            t["qkeras_over_float"] = t["qkeras"] / t["float"] if t["float"] > 0 else None
            t["hls_over_float"] = t["hls"] / t["float"] if t["float"] > 0 else None
            tpr[sig] = t
        accuracy = {
            "n_background": len(p_bkg), "n_signal": {s: len(p) for s, p in p_sig.items()},
            "n_events": int(len(allq)),
            "max_abs_delta_output_hls_vs_qkeras": float(max(np.abs(np.asarray(y_h[s]).reshape(y_q[s].shape) - y_q[s]).max() for s in samples)),
            "max_abs_delta_score_hls_vs_qkeras": float(np.abs(allh - allq).max()),
            "spearman_hls_vs_qkeras": float(spearmanr(allh, allq).statistic),
            "spearman_qkeras_vs_float": float(spearmanr(allq, allf).statistic),
            "spearman_qkeras_vs_float_tail": _tail_spearman(s_float, s_q),
            "quantisation_vs_signal": _resolution(layers, xf_train, kind, cfg, fmt, w_int, a_int, o_int, in_int),
            "fpr_for_tpr": fpr,
            "score_scale": "the deployed score is output_scale**2 * the float score (same ranking); "
                           "max_abs_delta_score is in deployed units",
            "fpr_note": "TPR at FPR = 1e-5 needs >= 1M background events; the check uses the smallest power of ten "
                        "with >= 10 background events above threshold",
            "tpr": tpr,
        }
        # ---- resources, FLOPs, bundle
        kq = qat.kernels(qmodel, quantized=True)
        kf = qat.kernels(qmodel, quantized=False)
        in_widths = {}
        width = cfg.input_bits
        for layer in layers:
            in_widths[layer.name] = width
            width = cfg.activation_bits
        art = hls.bundle(project, out, "l1ad_encoder")
        h5 = out / "qkeras_model.h5"
        qmodel.save(h5)
        bar.advance(task)
    import hls4ml
    import qkeras
    import tensorflow as tf

    rep = {
        "model": str(model_path), "model_class": type(model).__name__, "score": kind,
        "deployed": "encoder up to mu; score = sum(mu_i^2) on the firmware output" if kind == "mu2"
        else "full autoencoder; score = MSE(output, input) on the firmware output",
        "architecture": [{"name": layer.name, "n_in": layer.weight.shape[0], "n_out": layer.weight.shape[1],
                          "activation": layer.activation} for layer in layers],
        "hls4ml": {"backend": "Vitis", "part": cfg.part, "io_type": "io_parallel", "strategy": "Latency",
                   "reuse_factor": cfg.reuse_factor, "clock_period_ns": cfg.clock_period_ns,
                   "versions": {"hls4ml": hls4ml.__version__, "qkeras": getattr(qkeras, "__version__", "?"),
                                "tensorflow": tf.__version__, "python": platform.python_version()}},
        "bit_widths": {
            "inputs": f"ap_fixed<{cfg.input_bits},{in_int}>",
            "weights_biases": {layer.name: _qb(cfg.weight_bits, w_int, layer.name) for layer in layers},
            "activations": {name: f"quantized_relu({cfg.activation_bits},{_per(a_int, name)}) = "
                            f"ap_ufixed<{cfg.activation_bits},{_per(a_int, name)}>" for name in sorted(relu)},
            "output": _qb(cfg.output_bits, o_int) + " (round to nearest, saturate)",
            "widths_from": {k: "config" if v is not None else "bit search (bits_search)" for k, v in (
                ("weights", given.weight_bits), ("activations", given.activation_bits), ("inputs", given.input_bits))},
            "bits_search": bits_search,
            "integer_bits_from": {k: "config" if v is not None else "float ranges" for k, v in (
                ("inputs", cfg.input_integer_bits), ("weights", cfg.integer_bits),
                ("activations", cfg.activation_integer_bits), ("output", cfg.output_integer_bits))},
            "per_layer": {name: lc.get("Precision", {}) for name, lc in hls_cfg["LayerName"].items()},
        },
        "input_transform": _input_transform(std, in_scale, cfg, in_int, saturation, kq,
                                            report.latency_estimate(kq, relu, cfg.reuse_factor, cfg.clock_period_ns),
                                            report.dsp_estimate(kq, cfg.reuse_factor, cfg.weight_bits, in_widths)),
        "rescaling": {"output_scale": out_scale, "input_scale": np.round(in_scale, 6).tolist(),
                      "note": "mu layer weights and bias multiplied by output_scale (mu RMS 1 on background): "
                              "deployed score = output_scale**2 * float score, same ranking; the firmware reads "
                              "feature_i / input_scale_i (input RMS on background, >= 0.05) and the first layer "
                              "rows are multiplied by input_scale (same function; magnitude pruning then "
                              "measures importance on background)"},
        "qat": {"epochs": cfg.qat_epochs, "events": len(p_train), "loss_history": losses,
                "target": "rescaled float VAE mu (distillation)" if kind == "mu2" else "input (autoencoder objective)"},
        "sparsity": {"target": cfg.sparsity, "target_per_layer": prune_targets, "pruned": prune.sparsity(kf),
                     "after_quantization": prune.sparsity(kq),
                     "rule": "total target over all weights, taken from the first layer first (<= 80 % per layer)"},
        "flops": flops.summary(kq, relu, kind),
        "resources": report.dsp_estimate(kq, cfg.reuse_factor, cfg.weight_bits, in_widths),
        "latency": report.latency_estimate(kq, relu, cfg.reuse_factor, cfg.clock_period_ns),
        "accuracy": accuracy,
        "artefacts": {**art, "qkeras_model": str(h5)},
    }
    rep["artefacts"]["firmware_report"] = str(report.write(rep, out / "firmware_report.json"))
    return rep


def _input_transform(std, in_scale, cfg, in_int, saturation, kq, lat, dsp) -> dict:
    """How the input scaling is realised, what it costs, and how many inputs saturate."""
    n_scaled = int(np.sum(np.asarray(in_scale) != 1.0))
    from_model = std is not None
    return {
        "source": "model standardisation (x - shift) / scale saved with the model" if from_model
        else "background RMS of each feature (deploy.ranges.standardise_inputs, floor 0.05)" if n_scaled else "none",
        "firmware_input": "x_i / input_scale_i, ap_fixed<%d,%d> (round to nearest, saturate)" % (cfg.input_bits, in_int),
        "realised_as": "documented upstream per-feature scale: the L1 object unpacker / GT preprocessing that "
                       "produces the 57 features multiplies feature i by the constant 1/input_scale_i before the "
                       "encoder (not inside the hls4ml project); the mean offset is folded exactly into dense1's "
                       "bias (b' = b - (shift/scale) W)" if from_model else
                       "documented upstream per-feature scale (x_i / input_scale_i before the encoder); the first "
                       "layer rows carry input_scale_i (same function)",
        "input_scale": np.round(np.asarray(in_scale), 6).tolist(),
        "shift": np.round(std[0], 6).tolist() if from_model else None,
        "cost_if_in_firmware": {
            "multiplications": n_scaled,
            "dsp_upper_bound": n_scaled // cfg.reuse_factor + (n_scaled % cfg.reuse_factor > 0),
            "latency_cycles": 1 if n_scaled else 0,
            "dsp_upper_bound_total": dsp["dsp_upper_bound"] + n_scaled // cfg.reuse_factor + (n_scaled % cfg.reuse_factor > 0),
            "latency_cycles_total": lat["cycles"] + (1 if n_scaled else 0),
            "latency_ns_total": (lat["cycles"] + (1 if n_scaled else 0)) * cfg.clock_period_ns,
            "rule": "one constant multiplier per scaled feature (/ reuse_factor, upper bound; a constant "
                    "multiply of a <= 18-bit input often maps to LUT shift-adds), one pipeline cycle; "
                    "not counted in resources/latency, which cover the hls4ml project only"},
        "saturation": saturation,
        "saturation_note": "inputs outside the ap_fixed range on the check samples (background = held-out 'sm'); "
                           "the integer bits cover the training-background maximum with 1 bit of headroom",
    }


def _per(v, name: str) -> int:
    return v[name] if isinstance(v, dict) else v


def _qb(bits: int, integer, name: str | None = None) -> str:
    i = _per(integer, name) if name else integer
    return f"quantized_bits({bits},{i}) = ap_fixed<{bits},{i + 1}>"


def pipeline_stage(cfg, ctx) -> dict:
    """``lhcad run`` stage: deploy ``<workdir>/l1/<deploy.model>.pt``."""
    model = ctx.workdir / "l1" / f"{cfg.deploy.model}.pt"
    rep = build_firmware(model, cfg.store, ctx.workdir / "deploy", cfg.deploy)
    acc = rep["accuracy"]
    figures = {"sparsity": rep["sparsity"]["pruned"]["total"], "flops_dense": rep["flops"]["dense"],
               "flops_nonzero": rep["flops"]["nonzero"], "dsp_upper_bound": rep["resources"]["dsp_upper_bound"],
               "latency_cycles_estimate": rep["latency"]["cycles"], "latency_ns_estimate": rep["latency"]["ns"],
               "max_abs_delta_score": acc["max_abs_delta_score_hls_vs_qkeras"],
               "spearman_hls_vs_qkeras": acc["spearman_hls_vs_qkeras"], "fpr_for_tpr": acc["fpr_for_tpr"],
               "tpr_hls_over_qkeras": {s: t["hls_over_qkeras"] for s, t in acc["tpr"].items()}}
    return {"figures": figures, "plots": [], "artefacts": rep["artefacts"]}
