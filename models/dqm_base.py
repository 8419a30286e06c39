"""Shared machinery of the DQM autoencoders (:mod:`lhcad.models.dqm_dense`, :mod:`lhcad.models.dqm_lstm`).

Both take per-LS unit-area histograms ``X`` (n_LS, n_bins) with their entries ``N``; both decode to a
softmax around the mean training shape, so a reconstruction is itself a unit-area histogram. Training
minimises a Poisson-weighted MSE (:func:`lhcad.dqm.score.loss_weights`); :meth:`score_samples` returns
the Poisson-aware χ² per bin (:func:`lhcad.dqm.score.poisson_chi2`).
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import torch

from lhcad.dqm.score import loss_weights, poisson_chi2


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


class HistogramAE:
    """Base estimator: preprocessing, the training loop with a validation split, save/load."""

    kind = "base"

    def __init__(self, *, epochs: int = 80, batch_size: int = 128, lr: float = 3e-3,
                 weight_decay: float = 1e-5, val_fraction: float = 0.15, seed: int = 0,
                 device: str = "cpu", threads: int | None = None):
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.val_fraction = val_fraction
        self.seed = seed
        self.device = device
        self.threads = threads
        self.net_: torch.nn.Module | None = None
        self.history_: list[float] = []

    # ---------------------------------------------------------------- to be provided by subclasses
    def _build(self, n_bins: int) -> torch.nn.Module:  # pragma: no cover - abstract
        raise TypeError("HistogramAE is a base class; use DenseAE or LSTMAE")

    def _batches(self, X, entries, groups, rng, train: bool):  # pragma: no cover - abstract
        raise TypeError("HistogramAE is a base class; use DenseAE or LSTMAE")

    def hyper_parameters(self) -> dict:
        return {k: getattr(self, k) for k in ("epochs", "batch_size", "lr", "weight_decay",
                                               "val_fraction", "seed", "device")}

    # ---------------------------------------------------------------- common
    def _setup(self, X: np.ndarray, entries: np.ndarray) -> None:
        self.n_bins_ = X.shape[1]
        ok = entries > 0
        self.mean_shape_ = X[ok].mean(axis=0) if ok.any() else np.full(X.shape[1], 1 / X.shape[1])
        self.scale_ = X[ok].std(axis=0) + 1e-4 if ok.any() else np.ones(X.shape[1])
        _, self.bin_weight_ = loss_weights(X, entries)
        # Express the loss in Poisson χ²-per-bin units (≈ 1 for a residual at the statistical noise):
        # the squared residuals of unit-area fractions are ~1e-6, and at that scale Adam's ε (1e-8)
        # swamps the gradients — the network then never moves from its initial constant output and
        # "reconstructs" every LS as the mean shape (what the first version did: its scores were
        # distances to the average LS, which depend on pile-up, not reconstruction errors).
        n_mean = max(float(entries[ok].mean()) if ok.any() else 1.0, 1.0)
        self.loss_scale_ = float(n_mean * np.mean(1.0 / (self.mean_shape_ + 1.0 / n_mean)) / self.bin_weight_.mean())

    def _tensors(self):
        dev = _device(self.device)
        return (torch.as_tensor(self.mean_shape_, dtype=torch.float32, device=dev),
                torch.as_tensor(self.scale_, dtype=torch.float32, device=dev),
                torch.as_tensor(self.bin_weight_, dtype=torch.float32, device=dev), dev)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        """Unit-area reconstruction of unit-area input ``x`` (..., n_bins)."""
        mean, scale, _, _ = self._tensors_cache
        z = (x - mean) / scale
        logits = self.net_(z) + torch.log(mean + 1e-6)
        return torch.softmax(logits, dim=-1)

    def _loss(self, x, w) -> torch.Tensor:
        _, _, bw, _ = self._tensors_cache
        r = self._forward(x)
        per_ls = (((x - r) ** 2) * bw).mean(dim=-1) * getattr(self, "loss_scale_", 1.0)
        return (per_ls * w).sum() / w.sum().clamp_min(1e-9)

    def fit(self, X: np.ndarray, entries: np.ndarray | None = None, groups: np.ndarray | None = None):
        """Train on GOOD LSs ``X`` (unit-area fractions); ``groups`` = run numbers (LS order kept)."""
        X = np.asarray(X, dtype=np.float64)
        entries = np.ones(len(X)) if entries is None else np.asarray(entries, dtype=np.float64)
        groups = np.zeros(len(X), np.int64) if groups is None else np.asarray(groups)
        if len(X) < 2:
            raise ValueError(f"{type(self).__name__}.fit: need at least 2 LSs, got {len(X)}")
        if self.threads:
            torch.set_num_threads(self.threads)
        torch.manual_seed(self.seed)
        rng = np.random.default_rng(self.seed)
        self._setup(X, entries)
        self._tensors_cache = self._tensors()
        dev = self._tensors_cache[3]
        self.net_ = self._build(X.shape[1]).to(dev)
        ls_w, _ = loss_weights(X, entries)
        train_b, val_b = self._batches(X, ls_w, groups, rng, train=True)
        opt = torch.optim.Adam(self.net_.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(self.epochs, 1))
        best, best_state = np.inf, None
        self.history_ = []
        for _ in range(self.epochs):
            self.net_.train()
            for i in rng.permutation(len(train_b)):
                x, w = (t.to(dev) for t in train_b[i])
                opt.zero_grad()
                loss = self._loss(x, w)
                loss.backward()
                opt.step()
            sched.step()
            self.net_.eval()
            with torch.no_grad():
                batches = val_b or train_b
                val = float(np.mean([self._loss(x.to(dev), w.to(dev)).item() for x, w in batches]))
            self.history_.append(val)
            if val < best:
                best, best_state = val, copy.deepcopy(self.net_.state_dict())
        if best_state is not None:
            self.net_.load_state_dict(best_state)
        self.net_.eval()
        return self

    def _check_fitted(self):
        if self.net_ is None:
            raise RuntimeError(f"{type(self).__name__} is not fitted; call fit() or load()")

    def reconstruct(self, X: np.ndarray, groups: np.ndarray | None = None) -> np.ndarray:
        """Unit-area reconstructions of ``X`` (same shape)."""
        raise TypeError("HistogramAE is a base class")  # pragma: no cover

    def score_samples(self, X: np.ndarray, entries: np.ndarray, groups: np.ndarray | None = None) -> np.ndarray:
        """Poisson-aware χ² per bin of every LS against its reconstruction (higher = more anomalous)."""
        return poisson_chi2(X, self.reconstruct(X, groups), entries)

    # ---------------------------------------------------------------- persistence
    def save(self, path: str | Path) -> Path:
        self._check_fitted()
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({
            "kind": self.kind, "hyper": self.hyper_parameters(), "n_bins": self.n_bins_,
            "mean_shape": self.mean_shape_.tolist(), "scale": self.scale_.tolist(),
            "bin_weight": self.bin_weight_.tolist(), "history": self.history_,
            "state": self.net_.state_dict(),
        }, path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> HistogramAE:
        blob = torch.load(Path(path), map_location="cpu", weights_only=True)
        if blob.get("kind") != cls.kind:
            raise ValueError(f"{path}: holds a {blob.get('kind')!r} model, not {cls.kind!r}")
        hyper = dict(blob["hyper"])
        hyper["device"] = "cpu" if hyper.get("device") == "cuda" and not torch.cuda.is_available() else hyper.get("device", "cpu")
        model = cls(**hyper)
        model.n_bins_ = int(blob["n_bins"])
        model.mean_shape_ = np.asarray(blob["mean_shape"])
        model.scale_ = np.asarray(blob["scale"])
        model.bin_weight_ = np.asarray(blob["bin_weight"])
        model.history_ = list(blob["history"])
        model._tensors_cache = model._tensors()
        model.net_ = model._build(model.n_bins_).to(model._tensors_cache[3])
        model.net_.load_state_dict(blob["state"])
        model.net_.eval()
        return model


def load_model(path: str | Path) -> HistogramAE:
    """Load a saved DQM autoencoder of either kind."""
    from lhcad.models.dqm_dense import DenseAE
    from lhcad.models.dqm_lstm import LSTMAE

    kind = torch.load(Path(path), map_location="cpu", weights_only=True).get("kind")
    classes = {DenseAE.kind: DenseAE, LSTMAE.kind: LSTMAE}
    if kind not in classes:
        raise ValueError(f"{path}: not a DQM autoencoder (kind {kind!r})")
    return classes[kind].load(path)
