"""LSTM autoencoder over the LS sequence of a run (the DQM seed's suggested extension).

A run's LSs, in order, are cut into windows of ``window`` consecutive LSs (half-overlapping). An LSTM
encoder reads a window into one ``latent`` vector; a decoder LSTM unrolls it back into ``window``
histograms. A faulty LS is reconstructed from what its neighbours share, so it stands out; every LS's
reconstruction is the average over the windows that contain it. Runs shorter than ``window`` form one
shorter window.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> counts = rng.multinomial(500, np.linspace(1, 2, 8) / np.linspace(1, 2, 8).sum(), size=120)
>>> X, N, runs = counts / 500.0, np.full(120, 500.0), np.repeat([1, 2], 60)
>>> ae = LSTMAE(window=8, hidden=16, latent=4, epochs=3).fit(X, N, runs)
>>> ae.score_samples(X, N, runs).shape
(120,)
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from lhcad.models.dqm_base import HistogramAE


class _Seq2Seq(nn.Module):
    def __init__(self, n_bins: int, hidden: int, latent: int):
        super().__init__()
        self.encoder = nn.LSTM(n_bins, hidden, batch_first=True)
        self.to_latent = nn.Linear(hidden, latent)
        self.from_latent = nn.Linear(latent, hidden)
        self.decoder = nn.LSTM(hidden, hidden, batch_first=True)
        self.out = nn.Linear(hidden, n_bins)

    def forward(self, z: torch.Tensor) -> torch.Tensor:  # z: (B, L, n_bins)
        _, (h, _) = self.encoder(z)
        code = self.to_latent(h[-1])
        seed = torch.tanh(self.from_latent(code)).unsqueeze(1).expand(-1, z.shape[1], -1)
        dec, _ = self.decoder(seed.contiguous())
        return self.out(dec)


def _window_starts(n: int, window: int, stride: int) -> list[int]:
    if n <= window:
        return [0]
    starts = list(range(0, n - window + 1, stride))
    if starts[-1] != n - window:
        starts.append(n - window)
    return starts


class LSTMAE(HistogramAE):
    """Sequence AE over consecutive LSs: ``window`` LSs → one ``latent`` code → ``window`` LSs."""

    kind = "lstm"

    def __init__(self, window: int = 16, hidden: int = 32, latent: int = 8, **kwargs):
        super().__init__(**kwargs)
        self.window = window
        self.hidden = hidden
        self.latent = latent

    def hyper_parameters(self) -> dict:
        return {**super().hyper_parameters(), "window": self.window, "hidden": self.hidden, "latent": self.latent}

    def _build(self, n_bins: int) -> nn.Module:
        return _Seq2Seq(n_bins, self.hidden, self.latent)

    def _runs(self, groups: np.ndarray) -> list[np.ndarray]:
        """Row indices of each run, in the given (LS) order."""
        _, first = np.unique(groups, return_index=True)
        return [np.flatnonzero(groups == groups[i]) for i in sorted(first)]

    def _windows(self, groups: np.ndarray, stride: int) -> list[np.ndarray]:
        out = []
        for rows in self._runs(groups):
            for s in _window_starts(len(rows), self.window, stride):
                out.append(rows[s:s + self.window])
        return out

    def _batches(self, X, ls_w, groups, rng, train: bool):
        wins = self._windows(groups, stride=max(1, self.window // 4))
        order = rng.permutation(len(wins))
        n_val = int(round(self.val_fraction * len(wins))) if len(wins) >= 20 else 0
        val, tr = [wins[i] for i in order[:n_val]], [wins[i] for i in order[n_val:]]

        def chunks(ws):
            by_len: dict[int, list] = {}
            for w in ws:
                by_len.setdefault(len(w), []).append(w)
            out = []
            for group in by_len.values():
                for i in range(0, len(group), self.batch_size):
                    idx = np.stack(group[i:i + self.batch_size])
                    out.append((torch.as_tensor(X[idx], dtype=torch.float32),
                                torch.as_tensor(ls_w[idx], dtype=torch.float32)))
            return out

        return chunks(tr), chunks(val)

    def reconstruct(self, X: np.ndarray, groups: np.ndarray | None = None) -> np.ndarray:
        self._check_fitted()
        X = np.asarray(X, dtype=np.float64)
        groups = np.zeros(len(X), np.int64) if groups is None else np.asarray(groups)
        total = np.zeros_like(X)
        count = np.zeros(len(X))
        wins = self._windows(groups, stride=max(1, self.window // 2))
        by_len: dict[int, list] = {}
        for w in wins:
            by_len.setdefault(len(w), []).append(w)
        dev = self._tensors_cache[3]
        with torch.no_grad():
            for group in by_len.values():
                for i in range(0, len(group), 512):
                    idx = np.stack(group[i:i + 512])
                    r = self._forward(torch.as_tensor(X[idx], dtype=torch.float32, device=dev)).cpu().numpy()
                    np.add.at(total, idx.ravel(), r.reshape(-1, X.shape[1]))
                    np.add.at(count, idx.ravel(), 1.0)
        return total / np.maximum(count, 1)[:, None]
