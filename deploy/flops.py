"""FLOPs of the deployed dense network, counted as ADC2021 does.

One multiply-accumulate = 2 FLOPs; plus 1 FLOP per bias and per ReLU output. ``nonzero`` counts only
MACs with a non-zero (quantised) weight, i.e. what remains after pruning and quantisation. The score
on the network output is counted separately: Σμ² = d mults + (d − 1) adds; MSE = 3 per feature.
"""

from __future__ import annotations

import numpy as np


def count(kernels: dict[str, np.ndarray], relu_layers: set[str], nonzero: bool = False) -> int:
    total = 0
    for name, w in kernels.items():
        w = np.asarray(w)
        macs = int(np.count_nonzero(w)) if nonzero else int(w.size)
        total += 2 * macs + w.shape[1] + (w.shape[1] if name in relu_layers else 0)
    return total


def score(kind: str, n_out: int) -> int:
    return 2 * n_out - 1 if kind == "mu2" else 3 * n_out


def summary(kernels: dict[str, np.ndarray], relu_layers: set[str], kind: str) -> dict:
    n_out = np.asarray(list(kernels.values())[-1]).shape[1]
    dense, nz = count(kernels, relu_layers), count(kernels, relu_layers, nonzero=True)
    return {"dense": dense, "nonzero": nz, "score": score(kind, n_out), "dense_with_score": dense + score(kind, n_out),
            "rule": "MAC = 2 FLOPs, +1 per bias, +1 per ReLU output (ADC2021 dense count); "
                    "nonzero: MACs of non-zero quantised weights only; score counted separately"}
