"""The deploy stage end to end: saved L1 model → QKeras QAT + pruning → hls4ml project → C-sim check.

:func:`build_firmware` reads the model written by ``lhcad l1 train`` (``ae.pt`` / ``vae.pt``) and the
L1 background from the store, then

1. quantises the 57 input features to ``ap_fixed<input_bits, input_integer_bits>``;
2. rebuilds the deployed network in QKeras and re-trains it with QAT while pruning to the target
   sparsity (:mod:`lhcad.deploy.qat`, :mod:`lhcad.deploy.prune`); training events come from the
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


def _resolution(model, p_bkg: np.ndarray, kind: str, cfg) -> dict:
    """Spread of the float network output on background vs the fixed-point steps: a deployed output
    whose spread is a few LSBs (e.g. a collapsed VAE posterior, μ ≈ 0) cannot be ranked in firmware."""
    out = model.score_all(p_bkg[:100_000])["latent"] if kind == "mu2" else None
    return {"weight_lsb": 2.0 ** -(cfg.weight_bits - cfg.integer_bits - 1),
            "activation_lsb": 2.0 ** -(cfg.activation_bits - cfg.activation_integer_bits),
            "input_lsb": 2.0 ** -(cfg.input_bits - cfg.input_integer_bits),
            "float_mu_std_background": None if out is None else np.round(out.std(0), 5).tolist(),
            "note": "float mu spread per latent dimension on background; compare with the LSBs"}


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
    from lhcad.deploy import flops, hls, prune, qat, report
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
        q = lambda p: quantize_fixed(model.transform(p), cfg.input_bits, cfg.input_integer_bits)  # noqa: E731
        x_train = q(p_train)
        y_train = model.score_all(p_train)["latent"] if kind == "mu2" else x_train
        bar.advance(task)
        layers = model.dense_layers()
        relu = {layer.name for layer in layers if layer.activation == "relu"}
        qmodel = qat.build(layers, cfg.weight_bits, cfg.integer_bits, cfg.activation_bits, cfg.activation_integer_bits)
        qmodel, losses = qat.train(qmodel, x_train, y_train.astype(np.float32), sparsity=cfg.sparsity,
                                   epochs=cfg.qat_epochs)
        bar.advance(task)
        hls_cfg = hls.hls4ml_config(qmodel, f"fixed<{cfg.input_bits},{cfg.input_integer_bits}>", cfg.reuse_factor)
        project = out / "hls_project"
        hm = hls.convert(qmodel, project, hls_cfg, cfg.part, cfg.clock_period_ns)
        bar.advance(task)
        # ---- accuracy: C-sim vs QKeras vs float, on held-out background + signals
        samples = {"sm": p_bkg, **p_sig}
        x_chk = {s: q(p) for s, p in samples.items()}
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
            t = {name: tpr_at_fpr(d["sm"], d[sig], fpr)["tpr"] for name, d in (("float", s_float), ("qkeras", s_q), ("hls", s_h))}
            t["hls_over_qkeras"] = t["hls"] / t["qkeras"] if t["qkeras"] > 0 else None
            t["qkeras_over_float"] = t["qkeras"] / t["float"] if t["float"] > 0 else None
            tpr[sig] = t
        accuracy = {
            "n_background": len(p_bkg), "n_signal": {s: len(p) for s, p in p_sig.items()},
            "n_events": int(len(allq)),
            "max_abs_delta_output_hls_vs_qkeras": float(max(np.abs(np.asarray(y_h[s]).reshape(y_q[s].shape) - y_q[s]).max() for s in samples)),
            "max_abs_delta_score_hls_vs_qkeras": float(np.abs(allh - allq).max()),
            "spearman_hls_vs_qkeras": float(spearmanr(allh, allq).statistic),
            "spearman_qkeras_vs_float": float(spearmanr(allq, allf).statistic),
            "spearman_qkeras_vs_float_tail": _tail_spearman(s_float, s_q),
            "quantisation_vs_signal": _resolution(model, p_bkg, kind, cfg),
            "fpr_for_tpr": fpr,
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
            "inputs": f"ap_fixed<{cfg.input_bits},{cfg.input_integer_bits}>",
            "weights_biases": f"quantized_bits({cfg.weight_bits},{cfg.integer_bits}) = ap_fixed<{cfg.weight_bits},{cfg.integer_bits + 1}>",
            "activations": f"quantized_relu({cfg.activation_bits},{cfg.activation_integer_bits}) = "
                           f"ap_ufixed<{cfg.activation_bits},{cfg.activation_integer_bits}>",
            "per_layer": {name: lc.get("Precision", {}) for name, lc in hls_cfg["LayerName"].items()},
        },
        "qat": {"epochs": cfg.qat_epochs, "events": len(p_train), "loss_history": losses,
                "target": "float VAE mu (distillation)" if kind == "mu2" else "input (autoencoder objective)"},
        "sparsity": {"target": cfg.sparsity, "pruned": prune.sparsity(kf), "after_quantization": prune.sparsity(kq)},
        "flops": flops.summary(kq, relu, kind),
        "resources": report.dsp_estimate(kq, cfg.reuse_factor, cfg.weight_bits, in_widths),
        "latency": report.latency_estimate(kq, relu, cfg.reuse_factor, cfg.clock_period_ns),
        "accuracy": accuracy,
        "artefacts": {**art, "qkeras_model": str(h5)},
    }
    rep["artefacts"]["firmware_report"] = str(report.write(rep, out / "firmware_report.json"))
    return rep


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
