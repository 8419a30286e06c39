"""Magnitude pruning with tensorflow-model-optimization (tfmot).

The schedule is a polynomial ramp from 0 to the target sparsity over the first ``ramp`` fraction
of the training steps, then held. tfmot's default ``frequency=100`` would never prune a short run,
so the mask is updated every ``max(1, steps // 50)`` steps. After training :func:`strip` removes the
wrappers (the zeros stay in the kernels) and :func:`sparsity` measures what is left.
"""

from __future__ import annotations

import numpy as np


def wrap(model, target, total_steps: int, ramp: float = 0.6):
    """``prune_low_magnitude`` on the dense layers; returns (model, callbacks).

    ``target`` is one sparsity for every dense layer, or ``{layer name: sparsity}`` (layers not named,
    or with 0, are not pruned).
    """
    from lhcad.deploy.hls import legacy_keras

    keras = legacy_keras()
    import tensorflow_model_optimization as tfmot

    end = max(2, int(ramp * total_steps))

    def schedule(final):
        return tfmot.sparsity.keras.PolynomialDecay(initial_sparsity=0.0, final_sparsity=final, begin_step=0,
                                                    end_step=end, frequency=max(1, end // 50))

    if not isinstance(target, dict):
        return tfmot.sparsity.keras.prune_low_magnitude(model, pruning_schedule=schedule(target)), [
            tfmot.sparsity.keras.UpdatePruningStep()]

    def clone(layer):
        if target.get(layer.name, 0) > 0:
            return tfmot.sparsity.keras.prune_low_magnitude(layer, pruning_schedule=schedule(target[layer.name]))
        return layer.__class__.from_config(layer.get_config())

    pruned = keras.models.clone_model(model, clone_function=clone)
    _copy_weights(model, pruned)
    return pruned, [tfmot.sparsity.keras.UpdatePruningStep()]


def _copy_weights(src, dst) -> None:
    """Copy each layer's weights into its clone (the clone keeps the layer order; a pruning wrapper
    holds the original layer as ``.layer``)."""
    for a, b in zip(src.layers, dst.layers, strict=True):
        if a.get_weights():
            getattr(b, "layer", b).set_weights(a.get_weights())


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
