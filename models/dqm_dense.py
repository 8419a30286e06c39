"""Dense under-complete autoencoder on per-LS histograms (the DQM seed's two-layer architecture).

Encoder ``n_bins → hidden → latent``, decoder ``latent → hidden → n_bins`` (sizes configurable),
softmax output around the mean GOOD shape. One LS at a time: no knowledge of neighbouring LSs.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> counts = rng.multinomial(500, np.linspace(1, 2, 8) / np.linspace(1, 2, 8).sum(), size=200)
>>> X, N = counts / 500.0, np.full(200, 500.0)
>>> ae = DenseAE(hidden=16, latent=3, epochs=5).fit(X, N)
>>> ae.score_samples(X[:3], N[:3]).shape
(3,)
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from lhcad.models.dqm_base import HistogramAE


class DenseAE(HistogramAE):
    """Two-layer under-complete AE: ``hidden`` units, a ``latent`` bottleneck, mirrored decoder."""

    kind = "dense"

    def __init__(self, hidden: int = 32, latent: int = 4, **kwargs):
        super().__init__(**kwargs)
        self.hidden = hidden
        self.latent = latent

    def hyper_parameters(self) -> dict:
        return {**super().hyper_parameters(), "hidden": self.hidden, "latent": self.latent}

    def _build(self, n_bins: int) -> nn.Module:
        if self.latent >= n_bins:
            raise ValueError(f"DenseAE: latent {self.latent} must be < n_bins {n_bins} (under-complete)")
        return nn.Sequential(
            nn.Linear(n_bins, self.hidden), nn.ELU(), nn.Linear(self.hidden, self.latent),
            nn.ELU(), nn.Linear(self.latent, self.hidden), nn.ELU(), nn.Linear(self.hidden, n_bins),
        )

    def _batches(self, X, ls_w, groups, rng, train: bool):
        n = len(X)
        idx = rng.permutation(n)
        n_val = int(round(self.val_fraction * n)) if n >= 20 else 0
        val_idx, tr_idx = idx[:n_val], idx[n_val:]

        def chunks(ids):
            return [
                (torch.as_tensor(X[ids[i:i + self.batch_size]], dtype=torch.float32),
                 torch.as_tensor(ls_w[ids[i:i + self.batch_size]], dtype=torch.float32))
                for i in range(0, len(ids), self.batch_size)
            ]

        return chunks(tr_idx), chunks(val_idx)

    def reconstruct(self, X: np.ndarray, groups: np.ndarray | None = None) -> np.ndarray:
        self._check_fitted()
        out = []
        with torch.no_grad():
            for i in range(0, len(X), 4096):
                x = torch.as_tensor(np.asarray(X[i:i + 4096]), dtype=torch.float32, device=self._tensors_cache[3])
                out.append(self._forward(x).cpu().numpy())
        return np.concatenate(out).astype(np.float64) if out else np.zeros((0, self.n_bins_))
