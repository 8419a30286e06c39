"""The ADC2021 baseline dense autoencoder 57 → 16 → 3 → 16 → 57 (score: reconstruction MSE).

ADC2021's baseline used BatchNorm + LeakyReLU; here the input scaling is done by
:class:`~lhcad.models.l1_preprocess.L1Preprocessor` and the activations are ReLU (firmware-friendly),
which keeps the same dense FLOPs count. Score ``mse`` = mean squared error over the 57 features.
``standardise=True`` (not the default; ``ae_std`` in :mod:`lhcad.models.l1_jobs`) puts the VAE's
input standardisation in front of the encoder — the role of the ADC2021 baseline's input BatchNorm —
folded into the first layer when deployed; the reconstruction target stays the preprocessed input.

>>> import numpy as np
>>> p = np.abs(np.random.default_rng(0).normal(10, 3, (256, 19, 3))).astype(np.float32)
>>> ae = DenseAE(epochs=1).fit(p, progress=False)
>>> ae.score_samples(p).shape
(256,)
"""

from __future__ import annotations

from lhcad.models.l1_base import (L1Estimator, add_standardisation, fit_standardisation, fold_standardisation,
                                  linear_layers, mlp)
from lhcad.models.l1_preprocess import N_FEATURES


class DenseAE(L1Estimator):
    """Dense autoencoder; ``hidden`` = encoder widths down to the latent (decoder mirrors them)."""

    score_kinds = ("mse",)
    default_score = "mse"
    _optional_buffers = ("shift", "scale")

    def __init__(self, hidden: tuple[int, ...] = (16, 3), epochs: int = 20, batch_size: int = 1024,
                 lr: float = 3e-3, seed: int = 0, standardise: bool = False):
        self.standardise = standardise
        self.hidden = hidden
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.seed = seed

    def _build(self):
        import torch

        sizes = [N_FEATURES, *self.hidden]
        enc = mlp(sizes)  # no activation on the latent
        dec = mlp(sizes[::-1])
        m = torch.nn.ModuleDict({"encoder": enc, "decoder": dec})
        add_standardisation(m, N_FEATURES)  # encoder input (x - shift) / scale; identity unless ``standardise``
        return m

    def _init_from_data(self, m, x_train) -> None:
        if self.standardise:
            fit_standardisation(m, x_train)

    def _forward(self, m, xb):
        z = m["encoder"]((xb - m.shift) / m.scale)
        return z, m["decoder"](z)

    def _loss(self, m, xb, epoch=0):
        _, rec = self._forward(m, xb)
        return ((rec - xb) ** 2).mean()

    def _scores(self, m, xb):
        z, rec = self._forward(m, xb)
        return {"mse": ((rec - xb) ** 2).mean(dim=1), "latent": z}

    def dense_layers(self):
        """The deployed network: the whole AE (its score needs the reconstruction)."""
        self._check_fitted()
        layers = linear_layers(self.module_["encoder"]) + linear_layers(self.module_["decoder"])
        for i, layer in enumerate(layers):
            layer.name = f"dense{i + 1}"
        return fold_standardisation(layers, self.module_)
