"""Magnitude pruning with tensorflow-model-optimization (tfmot).

The schedule is a polynomial ramp from 0 to the target sparsity over the first ``ramp`` fraction
of the training steps, then held. tfmot's default ``frequency=100`` would never prune a short run,
so the mask is updated every ``max(1, steps // 50)`` steps. After training :func:`strip` removes the
wrappers (the zeros stay in the kernels) and :func:`sparsity` measures what is left.
"""

from __future__ import annotations

import numpy as np


def wrap(model, target: float, total_steps: int, ramp: float = 0.6):
    """``prune_low_magnitude`` on every prunable (dense) layer; returns (model, callbacks)."""
    from lhcad.deploy.hls import legacy_keras

    legacy_keras()
    import tensorflow_model_optimization as tfmot

    end = max(2, int(ramp * total_steps))
    schedule = tfmot.sparsity.keras.PolynomialDecay(
        initial_sparsity=0.0, final_sparsity=target, begin_step=0, end_step=end,
        frequency=max(1, end // 50))
    pruned = tfmot.sparsity.keras.prune_low_magnitude(model, pruning_schedule=schedule)
    return pruned, [tfmot.sparsity.keras.UpdatePruningStep()]


def strip(model):
    """The model without pruning wrappers (pruned weights stay exactly zero)."""
    from lhcad.deploy.hls import legacy_keras

    legacy_keras()
    import tensorflow_model_optimization as tfmot

    return tfmot.sparsity.keras.strip_pruning(model)


def sparsity(kernels: dict[str, np.ndarray]) -> dict:
    """Fraction of zero weights per layer and overall (weights, not biases)."""
    per = {k: float(np.mean(np.asarray(w) == 0)) for k, w in kernels.items()}
    total = sum(int(np.sum(np.asarray(w) == 0)) for w in kernels.values())
    size = sum(int(np.asarray(w).size) for w in kernels.values())
    return {"total": total / max(size, 1), "per_layer": per, "n_weights": size, "n_zero": total}
