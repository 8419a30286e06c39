"""Fixed-point formats from the float network's own ranges, bit widths from a quantisation
simulation, and the function-preserving rescalings that make a collapsed VAE encoder deployable.

A β = 1 VAE trained on L1 background has a nearly collapsed posterior: on background μ varies by
~4e-4 (RMS; benchmark VAE) and the hidden ReLU units that feed it by 1e-4 … 1e-2 around their offsets,
so μ is a small difference of O(0.1) terms. With fixed ADC2021-style formats (8-bit weights with 1
integer bit, ``ap_ufixed<12,4>`` activations, ``fixed<16,6>`` μ) that variation is below one LSB and
the quantised encoder cannot rank events (QKeras vs float Spearman 0.5 measured). The steps:

1. :func:`scale_output` — the μ layer's weights and bias × one factor ``s`` so that μ has RMS 1 on
   background. The deployed score ``Σ(s·μ)² = s²·Σμ²`` ranks events exactly as Σμ² does and the QAT
   target ``s·μ_float`` is O(1). (Rescaling every hidden unit as well, exact for ReLU, was tried and
   is worse: it spreads a layer's weights over many octaves.)
2. :func:`standardise_inputs` — the firmware reads ``feature / r`` (``r`` = background RMS, ≥ 0.05)
   and the first-layer rows are × ``r``: same function, but a weight's magnitude now measures its
   effect on background, so magnitude pruning (tfmot) removes the unimportant ones. Measured on the
   benchmark VAE, 64 % of the first layer pruned without retraining: Spearman 0.55 vs −0.22 for
   plain magnitude pruning (0.86 vs 0.02 on a smaller VAE).
   A VAE trained with standardised input ((x − m) / s, s ≥ 0.01, folded into its first layer by
   ``dense_layers``) instead gets :func:`unfold_input_scale`: the firmware reads ``x / s`` and the
   first layer its trained weights (folded, they span ~100× and quantisation lost the ranking:
   QKeras vs float Spearman 0.47 on the CI toy).
3. :func:`prune_targets` — the total sparsity is taken from the first layer first; the μ layer is
   pruned last (pruning it at 50 % drove the QAT loss from 0.3 to 16).
4. :func:`formats` — integer bits per tensor from the (scaled) ranges: weights and biases of each
   layer from their max |value|, activations of each hidden layer from a high quantile of the
   background activations (rarer values saturate), the μ output from the background maximum with
   ``output_headroom_bits`` extra (signals above that saturate, which keeps them above any threshold
   a background-calibrated trigger uses), the inputs from their maximum with ``input_headroom_bits``
   extra (signal objects harder than any training event).
5. :func:`choose_bits` — the cheapest (weight, activation, input) widths of :data:`BIT_LADDER` whose
   post-training-quantised network (:func:`simulate`) ranks background like the float one. Measured
   on the benchmark VAE: Spearman 0.01 at 8/12/16 bits, 0.96 at 12/16/16, 0.9995 at 16/18/18.

With 16/18-bit formats, 64 % of the first layer pruned and 10 QAT epochs on 100 k events the QKeras
encoder reached Spearman 0.95 vs float (0.94 on background alone) and TPR@1e-3 within 10 % of float
on all four signals (``benchmarks/l1.py --deploy`` gives the 1e-5 figures on ≥ 1 M events).

>>> import numpy as np
>>> from lhcad.models.l1_base import DenseLayer
>>> rng = np.random.default_rng(0)
>>> ls = [DenseLayer(rng.normal(0, 0.1, (5, 4)), np.full(4, 0.2), "relu", "d1"),
...       DenseLayer(rng.normal(0, 0.01, (4, 2)), np.zeros(2), "linear", "mu")]
>>> x = rng.normal(0, 1, (1000, 5))
>>> scaled, s = scale_output(ls, x)
>>> out = forward(scaled, x)[-1]
>>> bool(np.allclose(out, s * forward(ls, x)[-1])), round(float(np.sqrt(np.mean(out**2))), 6)
(True, 1.0)
>>> formats(scaled, x)["weights"]["d1"], integer_bits(0.3), integer_bits(1.0), integer_bits(5.0)
(0, 0, 1, 3)
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np


def forward(layers, x: np.ndarray) -> list[np.ndarray]:
    """Output of every layer (after its activation) for inputs ``x`` (float64)."""
    outs, h = [], np.asarray(x, dtype=np.float64)
    for layer in layers:
        h = h @ layer.weight + layer.bias
        if layer.activation == "relu":
            h = np.maximum(h, 0.0)
        outs.append(h)
    return outs


def scale_output(layers, x: np.ndarray, rms: float = 1.0) -> tuple[list, float]:
    """Copy of ``layers`` with the last layer × ``s`` so that its output RMS on ``x`` is ``rms``;
    returns ``(layers, s)`` (module doc)."""
    layers = [replace(layer, weight=np.asarray(layer.weight, np.float64).copy(),
                      bias=np.asarray(layer.bias, np.float64).copy()) for layer in layers]
    cur = float(np.sqrt(np.mean(forward(layers, x)[-1] ** 2)))
    s = rms / cur if cur > 0 else 1.0
    layers[-1].weight *= s
    layers[-1].bias *= s
    return layers, s


def standardise_inputs(layers, x: np.ndarray, floor: float = 0.05) -> tuple[list, np.ndarray]:
    """Fold per-input scales into the first layer: the deployed network reads ``x / r`` (``r`` = RMS of
    each input on background, at least ``floor``) and its first-layer rows are multiplied by ``r``, so
    the function is unchanged and a weight's magnitude measures its effect on background. Magnitude
    pruning then removes unimportant weights (e.g. those of object slots that are almost always
    zero-padded) instead of small but important ones. Returns ``(layers, r)``."""
    r = np.maximum(np.sqrt(np.mean(np.asarray(x, np.float64) ** 2, axis=0)), floor)
    layers = [replace(layer, weight=np.asarray(layer.weight, np.float64).copy(),
                      bias=np.asarray(layer.bias, np.float64).copy()) for layer in layers]
    layers[0].weight *= r[:, None]
    return layers, r


def model_standardisation(model) -> tuple[np.ndarray, np.ndarray] | None:
    """``(shift, scale)`` of a model trained with standardised encoder input ((x − shift) / scale,
    saved with the model; :func:`lhcad.models.l1_base.fit_standardisation`), or None (identity)."""
    m = getattr(model, "module_", None)
    if m is None or not hasattr(m, "scale") or not hasattr(m, "shift"):
        return None
    shift = m.shift.detach().cpu().numpy().astype(np.float64)
    scale = m.scale.detach().cpu().numpy().astype(np.float64)
    if np.all(shift == 0) and np.all(scale == 1):
        return None
    return shift, scale


def unfold_input_scale(layers, scale: np.ndarray) -> tuple[list, np.ndarray]:
    """Undo the per-feature *scale* of a folded input standardisation (W' = W / s → W) and keep its
    mean offset in the first bias (b' = b − (m / s)·W, exact): the deployed network reads ``x / s``
    (a per-feature scale applied at the input) and its first layer holds the weights the model was
    trained with (O(1), not spread over ~100×). Same function: (x / s)·W + b' = ((x − m) / s)·W + b.
    Returns ``(layers, s)`` like :func:`standardise_inputs`."""
    s = np.asarray(scale, np.float64)
    layers = [replace(layer, weight=np.asarray(layer.weight, np.float64).copy(),
                      bias=np.asarray(layer.bias, np.float64).copy()) for layer in layers]
    layers[0].weight *= s[:, None]
    return layers, s


def input_saturation(x: np.ndarray, width: int, integer: int) -> dict:
    """How many inputs ``x`` (already divided by the input scale) fall outside ``ap_fixed<width, integer>``
    (saturated by the firmware input): events with ≥ 1 saturated feature, values, and the features hit."""
    step = 2.0 ** -(width - integer)
    lo, hi = -(2.0 ** (integer - 1)), 2.0 ** (integer - 1) - step
    sat = (np.asarray(x) < lo - step / 2) | (np.asarray(x) > hi + step / 2)
    return {"events": int(sat.any(1).sum()), "n_events": len(x), "fraction_events": float(sat.any(1).mean()),
            "values": int(sat.sum()), "features": np.flatnonzero(sat.any(0)).tolist(),
            "max_abs_input": float(np.abs(x).max()) if len(x) else 0.0}


def prune_targets(layers, total: float, max_per_layer: float = 0.8) -> dict[str, float]:
    """Per-layer sparsities reaching ``total`` over all weights, taken from the first (widest, input)
    layer first and from later layers only when it is full (``max_per_layer``); the μ / output layer
    is pruned last. Measured on the β = 1 VAE: pruning 64 % of the first layer keeps the ranking
    (Spearman 0.86 before any retraining, after :func:`standardise_inputs`) where 50 % in every layer
    destroys it (0.3)."""
    sizes = {layer.name: int(np.asarray(layer.weight).size) for layer in layers}
    left = round(total * sum(sizes.values()))
    out = {}
    for name, n in sizes.items():
        take = min(left, int(max_per_layer * n))
        out[name] = take / n
        left -= take
    return out


def integer_bits(max_abs: float) -> int:
    """Smallest ``I >= 0`` with ``max_abs < 2**I`` (QKeras ``integer``, sign bit excluded)."""
    max_abs = float(max_abs)
    return max(0, math.floor(math.log2(max_abs)) + 1) if max_abs > 0 else 0


def formats(layers, x: np.ndarray, *, activation_quantile: float = 0.99999, output_headroom_bits: int = 2,
            input_headroom_bits: int = 1) -> dict:
    """Integer bits from the (scaled) float ranges on background inputs ``x`` (module doc).

    Returns ``{"input": I_in, "weights": {layer: I}, "activations": {layer: I}, "output": I_out,
    "ranges": {...}}``; ``input`` counts the sign bit (``ap_fixed<W, I_in>``), the others exclude it
    (QKeras ``quantized_bits``/``quantized_relu`` ``integer``).
    """
    outs = forward(layers, x)
    x_max = float(np.abs(x).max())
    w = {layer.name: max(float(np.abs(layer.weight).max()), float(np.abs(layer.bias).max())) for layer in layers}
    act = {layer.name: float(np.quantile(o, activation_quantile)) for layer, o in zip(layers, outs, strict=True)
           if layer.activation == "relu"}
    out_max = float(np.abs(outs[-1]).max())
    return {"input": integer_bits(x_max * 2.0**input_headroom_bits) + 1,
            "weights": {k: integer_bits(v) for k, v in w.items()},
            "activations": {k: integer_bits(v) for k, v in act.items()},
            "output": integer_bits(out_max * 2.0**output_headroom_bits),
            "ranges": {"input_max": x_max, "weight_max": w, f"activation_q{activation_quantile:g}": act,
                       "output_max": out_max, "output_headroom_bits": output_headroom_bits,
                       "input_headroom_bits": input_headroom_bits}}


#: (weight, activation, input) bit ladder tried by :func:`choose_bits`, cheapest first
BIT_LADDER = ((8, 12, 16), (10, 14, 16), (12, 16, 16), (14, 18, 18), (16, 18, 18), (18, 20, 20))


def _qbits(v: np.ndarray, bits: int, integer: int) -> np.ndarray:
    """QKeras ``quantized_bits(bits, integer, alpha=1)``: round to nearest, saturate (sign bit extra)."""
    step = 2.0 ** -(bits - 1 - integer)
    return np.clip(np.round(v / step) * step, -(2.0**integer), 2.0**integer - step)


def _qrelu(v: np.ndarray, bits: int, integer: int) -> np.ndarray:
    """QKeras ``quantized_relu(bits, integer)``: ReLU, round to nearest, saturate."""
    step = 2.0 ** -(bits - integer)
    return np.clip(np.round(v / step) * step, 0.0, 2.0**integer - step)


def simulate(layers, x: np.ndarray, fmt: dict, weight_bits: int, activation_bits: int, input_bits: int,
             output_bits: int) -> np.ndarray:
    """Fixed-point forward pass (post-training quantisation, exact accumulation) with the integer bits
    of ``fmt`` (:func:`formats`); returns the quantised network output."""
    step = 2.0 ** -(input_bits - fmt["input"])
    h = np.clip(np.round(np.asarray(x, np.float64) / step) * step, -(2.0 ** (fmt["input"] - 1)),
                2.0 ** (fmt["input"] - 1) - step)
    for layer in layers:
        i = fmt["weights"][layer.name]
        h = h @ _qbits(layer.weight, weight_bits, i) + _qbits(layer.bias, weight_bits, i)
        if layer.activation == "relu":
            h = _qrelu(h, activation_bits, fmt["activations"][layer.name])
    return _qbits(h, output_bits, fmt["output"])


def choose_bits(layers, x: np.ndarray, fmt: dict, score, output_bits: int, target: float = 0.99,
                ladder=BIT_LADDER) -> tuple[tuple[int, int, int], list[dict]]:
    """Cheapest (weight, activation, input) bits of ``ladder`` whose post-training-quantised network
    ranks the background sample ``x`` like the float one: Spearman(score(fixed), score(float)) ≥
    ``target``; ``score`` maps network outputs (N, d) to per-event scores. A collapsed VAE needs more
    bits than the ADC2021 8-bit default (measured on the β = 1 VAE: 0.01 at 8/12 bits, 0.96 at 12/16,
    0.9995 at 16/18). Returns the choice (the last rung if none reaches ``target``) and every tried
    rung with its Spearman."""
    from scipy.stats import spearmanr

    ref = score(forward(layers, x)[-1])
    tried = []
    for wb, ab, ib in ladder:
        rho = float(spearmanr(score(simulate(layers, x, fmt, wb, ab, ib, output_bits)), ref).statistic)
        tried.append({"weight_bits": wb, "activation_bits": ab, "input_bits": ib, "spearman_vs_float": round(rho, 5)})
        if rho >= target:
            return (wb, ab, ib), tried
    return ladder[-1], tried
