"""Shared machinery of the L1 estimators: preprocessing + a torch module + a minibatch training loop.

Subclasses define ``_build()`` (the ``torch.nn.Module``), ``_loss(module, xb)`` and
``_scores(module, xb) -> dict[name, tensor]``. The estimator API is scikit-learn-like:
``fit(particles)`` on (N, 19, 3) background arrays, ``score_samples(particles, kind=...)`` (higher =
more anomalous), ``save(path)`` / ``load(path)`` (preprocessing saved with the weights), and
``dense_layers()`` describing the deployed part for FLOPs counting and the firmware stage.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from lhcad.models.base import Estimator
from lhcad.models.l1_preprocess import L1Preprocessor

log = logging.getLogger(__name__)


@dataclass
class DenseLayer:
    """One dense layer of a deployed network: weights (n_in, n_out), bias, activation after it."""

    weight: np.ndarray
    bias: np.ndarray
    activation: str  # "relu" | "linear"
    name: str


class L1Estimator(Estimator):
    """Base class; see module docstring. ``score_kinds`` lists the scores ``score_samples`` knows."""

    score_kinds: tuple[str, ...] = ()
    default_score: str = ""
    score_batch_size: int = 65536
    #: buffers that models saved by older versions may lack (their defaults are then kept)
    _optional_buffers: tuple[str, ...] = ()

    # ---------------------------------------------------------------- overridden by subclasses
    def _build(self):  # pragma: no cover - abstract
        raise NotImplementedError

    def _loss(self, module, xb):  # pragma: no cover - abstract
        raise NotImplementedError

    def _scores(self, module, xb) -> dict:  # pragma: no cover - abstract
        raise NotImplementedError

    def _init_from_data(self, module, x_train) -> None:
        """Hook: set data-derived buffers of a freshly built module (default: nothing)."""

    # ---------------------------------------------------------------- estimator API
    def fit(self, particles: np.ndarray, progress: bool = True, threads: int | None = None) -> L1Estimator:
        """Train on background events (N, 19, 3) with Adam, ``epochs`` × minibatches.

        ``threads``: torch intra-op threads (default: the Dask worker's threads, else the CPU count;
        pass it when several fits share the machine, e.g. in a process pool)."""
        import torch

        from lhcad.cluster import torch_threads_for_worker

        torch.set_num_threads(threads or torch_threads_for_worker())
        torch.manual_seed(self.seed)
        self.preprocessor_ = L1Preprocessor().fit(particles)
        x = torch.from_numpy(self.preprocessor_.transform(particles))
        n_val = max(1, int(0.05 * len(x)))
        gen = torch.Generator().manual_seed(self.seed)
        perm = torch.randperm(len(x), generator=gen)
        x_val, x_tr = x[perm[:n_val]], x[perm[n_val:]]
        self.module_ = self._build()
        self._init_from_data(self.module_, x_tr)
        opt = torch.optim.Adam(self.module_.parameters(), lr=self.lr)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=self.epochs)
        self.history_ = []
        from lhcad.log import progress as _progress

        import contextlib

        # no ``disable=`` keyword: lhcad.log.progress passes it twice when --quiet is set
        with (_progress() if progress else contextlib.nullcontext()) as bar:
            task = bar.add_task(f"train {type(self).__name__}", total=self.epochs) if bar else None
            for epoch in range(self.epochs):
                self.module_.train()
                order = torch.randperm(len(x_tr), generator=gen)
                total = 0.0
                for i in range(0, len(x_tr), self.batch_size):
                    xb = x_tr[order[i:i + self.batch_size]]
                    loss = self._loss(self.module_, xb, epoch)
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                    total += float(loss.detach()) * len(xb)
                sched.step()
                self.module_.eval()
                with torch.no_grad():
                    val = float(self._loss(self.module_, x_val, epoch))
                self.history_.append({"epoch": epoch, "train_loss": total / len(x_tr), "val_loss": val})
                log.debug("%s epoch %d: train %.5f val %.5f", type(self).__name__, epoch, total / len(x_tr), val)
                if bar:
                    bar.advance(task)
        self.fitted_ = True
        return self

    def transform(self, particles: np.ndarray) -> np.ndarray:
        """The 57 scaled input features (what the network and the firmware see)."""
        self._check_fitted()
        return self.preprocessor_.transform(particles)

    def score_samples(self, particles: np.ndarray, kind: str | None = None, batch_size: int | None = None) -> np.ndarray:
        """Anomaly score per event (higher = more anomalous); ``kind`` in :attr:`score_kinds`."""
        return self.score_all(particles, batch_size)[kind or self.default_score]

    def score_all(self, particles: np.ndarray, batch_size: int | None = None) -> dict[str, np.ndarray]:
        """Every score kind at once (one forward pass), plus ``latent`` (N, d) where defined."""
        import torch

        batch_size = batch_size or self.score_batch_size
        self._check_fitted()
        x = torch.from_numpy(self.transform(particles))
        parts: dict[str, list] = {}
        self.module_.eval()
        with torch.no_grad():
            for i in range(0, len(x), batch_size):
                for k, v in self._scores(self.module_, x[i:i + batch_size]).items():
                    parts.setdefault(k, []).append(v.numpy())
        return {k: np.concatenate(v) for k, v in parts.items()}

    # ---------------------------------------------------------------- persistence
    def _get_state(self) -> dict:
        return {"module": self.module_.state_dict(), "preprocessor": self.preprocessor_.to_dict(),
                "history": self.history_, "train_split": getattr(self, "train_split_", None)}

    def _set_state(self, state: dict) -> None:
        self.module_ = self._build()
        res = self.module_.load_state_dict(state["module"], strict=False)
        bad = [k for k in res.missing_keys if k not in self._optional_buffers] + list(res.unexpected_keys)
        if bad:
            raise ValueError(f"saved {type(self).__name__} state does not match the network (keys {bad})")
        self.module_.eval()
        self.preprocessor_ = L1Preprocessor.from_dict(state["preprocessor"])
        self.history_ = state.get("history", [])
        # fingerprint of the background split it was trained on (set by l1_jobs.train; None if unknown)
        self.train_split_ = state.get("train_split")


#: floor of the per-feature standard deviation of the input standardisation (features that are almost
#: always zero-padded would otherwise be blown up without bound)
STD_FLOOR = 0.01


def add_standardisation(module, n_features: int) -> None:
    """Register the ``shift`` / ``scale`` buffers of an input standardisation (identity until fitted)."""
    import torch

    module.register_buffer("shift", torch.zeros(n_features))
    module.register_buffer("scale", torch.ones(n_features))


def fit_standardisation(module, x_train) -> None:
    """Zero mean, unit variance per feature on the training data; scale floored at :data:`STD_FLOOR`."""
    module.shift.copy_(x_train.mean(dim=0))
    module.scale.copy_(x_train.std(dim=0).clamp(min=STD_FLOOR))


def fold_standardisation(layers: list[DenseLayer], module) -> list[DenseLayer]:
    """Fold (x - shift) / scale into the first layer: W' = W / s, b' = b - (m / s) W (same FLOPs)."""
    shift = module.shift.detach().cpu().numpy().astype(np.float64)
    scale = module.scale.detach().cpu().numpy().astype(np.float64)
    w = layers[0].weight.astype(np.float64)
    layers[0].weight = (w / scale[:, None]).astype(np.float32)
    layers[0].bias = (layers[0].bias - (shift / scale) @ w).astype(np.float32)
    return layers


def linear_layers(seq, names: list[str] | None = None) -> list[DenseLayer]:
    """DenseLayer list from a ``torch.nn.Sequential`` of Linear / ReLU layers."""
    import torch

    layers: list[DenseLayer] = []
    for mod in seq:
        if isinstance(mod, torch.nn.Linear):
            w = mod.weight.detach().cpu().numpy().T.copy()
            b = mod.bias.detach().cpu().numpy().copy()
            layers.append(DenseLayer(w, b, "linear", f"dense{len(layers) + 1}"))
        elif isinstance(mod, torch.nn.ReLU):
            layers[-1].activation = "relu"
        else:
            raise TypeError(f"cannot describe layer {mod!r} as a dense layer")
    if names:
        for layer, name in zip(layers, names, strict=False):
            layer.name = name
    return layers


def mlp(sizes: list[int], last_activation: bool = False):
    """``Linear → ReLU → ... → Linear`` (ReLU after the last layer only if asked)."""
    import torch

    mods: list = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        mods.append(torch.nn.Linear(a, b))
        if i < len(sizes) - 2 or last_activation:
            mods.append(torch.nn.ReLU())
    return torch.nn.Sequential(*mods)


def load_model(path) -> L1Estimator:
    """Load any saved L1 estimator (the class is recorded in the file)."""
    import importlib

    import torch

    try:
        payload = torch.load(path, map_location="cpu", weights_only=False)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no saved L1 model here") from None
    except Exception as exc:  # noqa: BLE001 - torch raises many kinds for non-model files
        raise ValueError(f"{path}: not a saved lhcad L1 model ({type(exc).__name__}: {exc})") from None
    cls_name = payload.get("class", "") if isinstance(payload, dict) else ""
    module, _, name = cls_name.rpartition(".")
    if not module.startswith("lhcad.models.l1_"):
        raise ValueError(f"{path}: not a saved lhcad L1 model (class {cls_name or '?'})")
    cls = getattr(importlib.import_module(module), name)
    return cls.from_payload(payload)
