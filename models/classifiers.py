"""Binary classifiers used by every weakly supervised method: torch MLP and sklearn HGB ensembles.

Both take ``fit(X, y, sample_weight=None)`` and return the mean class-1 probability of their members
from ``predict_proba(X)[:, 1]`` / ``score_samples(X)``. Classes are re-weighted to equal total weight
(weak supervision trains on very unbalanced mixed samples).

* :class:`MLPEnsemble` — ``n_members`` torch MLPs (own seeds), each with *epoch ensembling*: the
  predictions of its ``n_best_epochs`` lowest-validation-loss epochs are averaged.
* :class:`HGBEnsemble` — ``n_members`` :class:`~sklearn.ensemble.HistGradientBoostingClassifier`
  with early stopping on an internal validation split (large BDT ensembles are robust weak learners).

:func:`make_classifier` builds either from a name.
"""

from __future__ import annotations

import copy

import numpy as np

from lhcad.models.base import Estimator, resolve_device


def balanced_weights(y: np.ndarray, sample_weight: np.ndarray | None = None) -> np.ndarray:
    """Per-row weights giving both classes the same total weight (mean weight 1)."""
    y = np.asarray(y).astype(int)
    w = np.ones(len(y)) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
    out = np.empty(len(y))
    for c in (0, 1):
        sel = y == c
        if not sel.any():
            raise ValueError(f"classifier training set has no class-{c} rows")
        out[sel] = w[sel] / w[sel].sum() * (len(y) / 2)
    return out


def _check_xy(X, y) -> tuple[np.ndarray, np.ndarray]:
    X = np.asarray(X, dtype=np.float32)
    y = np.asarray(y).astype(int)
    if X.ndim != 2 or len(X) != len(y):
        raise ValueError(f"X must be (n, d) with n = len(y); got {X.shape} and {y.shape}")
    if not np.isfinite(X).all():
        raise ValueError("X contains NaN or inf values")
    return X, y


class HGBEnsemble(Estimator):
    """An ensemble of gradient-boosted tree classifiers (scikit-learn ``HistGradientBoosting``)."""

    def __init__(self, n_members: int = 1, max_iter: int = 200, learning_rate: float = 0.1,
                 max_leaf_nodes: int = 31, l2_regularization: float = 0.0,
                 validation_fraction: float = 0.2, random_state: int = 0):
        self.n_members = n_members
        self.max_iter = max_iter
        self.learning_rate = learning_rate
        self.max_leaf_nodes = max_leaf_nodes
        self.l2_regularization = l2_regularization
        self.validation_fraction = validation_fraction
        self.random_state = random_state

    def fit(self, X, y, sample_weight=None) -> HGBEnsemble:
        from sklearn.ensemble import HistGradientBoostingClassifier

        X, y = _check_xy(X, y)
        w = balanced_weights(y, sample_weight)
        self.members_ = []
        for i in range(self.n_members):
            clf = HistGradientBoostingClassifier(
                max_iter=self.max_iter, learning_rate=self.learning_rate,
                max_leaf_nodes=self.max_leaf_nodes, l2_regularization=self.l2_regularization,
                early_stopping=True, validation_fraction=self.validation_fraction,
                n_iter_no_change=10, random_state=self.random_state + 7919 * i,
            )
            self.members_.append(clf.fit(X, y, sample_weight=w))
        self.fitted_ = True
        return self

    def predict_proba(self, X) -> np.ndarray:
        self._check_fitted()
        X = np.asarray(X, dtype=np.float32)
        p = np.mean([m.predict_proba(X)[:, 1] for m in self.members_], axis=0)
        return np.column_stack([1 - p, p])

    def score_samples(self, X) -> np.ndarray:
        return self.predict_proba(X)[:, 1]

    def predict(self, X) -> np.ndarray:
        return (self.score_samples(X) > 0.5).astype(int)

    def _get_state(self) -> dict:
        return {"members": self.members_}

    def _set_state(self, state: dict) -> None:
        self.members_ = list(state["members"])


def _mlp(n_in: int, hidden: tuple[int, ...], dropout: float):
    import torch.nn as nn

    layers: list = []
    for h in hidden:
        layers += [nn.Linear(n_in, h), nn.ReLU()]
        if dropout:
            layers.append(nn.Dropout(dropout))
        n_in = h
    layers.append(nn.Linear(n_in, 1))
    return nn.Sequential(*layers)


class MLPEnsemble(Estimator):
    """``n_members`` torch MLPs with epoch ensembling; inputs standardised internally.

    Parameters
    ----------
    hidden : hidden layer widths; epochs, batch_size, lr, weight_decay, dropout: training;
    val_fraction : held-out fraction that ranks the epochs; n_best_epochs : epochs averaged per member;
    device : ``"auto"`` (CUDA when present), ``"cpu"`` or ``"cuda"``.
    """

    def __init__(self, n_members: int = 1, hidden: tuple[int, ...] = (64, 64, 64), epochs: int = 30,
                 batch_size: int = 256, lr: float = 1e-3, weight_decay: float = 0.0, dropout: float = 0.0,
                 val_fraction: float = 0.2, n_best_epochs: int = 5, device: str = "auto",
                 random_state: int = 0):
        self.n_members = n_members
        self.hidden = hidden
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.dropout = dropout
        self.val_fraction = val_fraction
        self.n_best_epochs = n_best_epochs
        self.device = device
        self.random_state = random_state

    def fit(self, X, y, sample_weight=None) -> MLPEnsemble:
        import torch

        X, y = _check_xy(X, y)
        w = balanced_weights(y, sample_weight)
        self.mean_, self.std_ = X.mean(axis=0), np.where(X.std(axis=0) > 0, X.std(axis=0), 1.0)
        dev = resolve_device(self.device)
        Xs = torch.as_tensor((X - self.mean_) / self.std_, dtype=torch.float32, device=dev)
        yt = torch.as_tensor(y, dtype=torch.float32, device=dev)
        wt = torch.as_tensor(w, dtype=torch.float32, device=dev)
        self.members_, self.val_losses_ = [], []
        for i in range(self.n_members):
            gen = torch.Generator().manual_seed(self.random_state + 7919 * i)
            torch.manual_seed(self.random_state + 7919 * i)
            perm = torch.randperm(len(X), generator=gen).to(dev)
            n_val = max(1, int(self.val_fraction * len(X)))
            iv, it = perm[:n_val], perm[n_val:]
            net = _mlp(X.shape[1], tuple(self.hidden), self.dropout).to(dev)
            opt = torch.optim.Adam(net.parameters(), lr=self.lr, weight_decay=self.weight_decay)
            loss_fn = torch.nn.BCEWithLogitsLoss(reduction="none")
            history: list[tuple[float, dict]] = []
            for _ in range(self.epochs):
                net.train()
                order = it[torch.randperm(len(it), generator=gen).to(dev)]
                for s in range(0, len(order), self.batch_size):
                    b = order[s:s + self.batch_size]
                    loss = (loss_fn(net(Xs[b]).squeeze(1), yt[b]) * wt[b]).mean()
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                net.eval()
                with torch.no_grad():
                    vl = float((loss_fn(net(Xs[iv]).squeeze(1), yt[iv]) * wt[iv]).mean())
                history.append((vl, {k: v.detach().cpu().clone() for k, v in net.state_dict().items()}))
            best = sorted(history, key=lambda t: t[0])[: self.n_best_epochs]
            self.members_.append([s for _, s in best])
            self.val_losses_.append([v for v, _ in best])
        self.fitted_ = True
        return self

    def _nets(self):
        dev = resolve_device(self.device)
        nets = []
        for member in self.members_:
            for state in member:
                net = _mlp(len(self.mean_), tuple(self.hidden), self.dropout)
                net.load_state_dict(state)
                nets.append(net.to(dev).eval())
        return nets, dev

    def score_samples(self, X) -> np.ndarray:
        import torch

        self._check_fitted()
        X = np.asarray(X, dtype=np.float32)
        nets, dev = self._nets()
        xt = torch.as_tensor((X - self.mean_) / self.std_, dtype=torch.float32, device=dev)
        out = np.zeros(len(X))
        with torch.no_grad():
            for net in nets:
                for s in range(0, len(X), 65536):
                    out[s:s + 65536] += torch.sigmoid(net(xt[s:s + 65536]).squeeze(1)).cpu().numpy()
        return out / len(nets)

    def predict_proba(self, X) -> np.ndarray:
        p = self.score_samples(X)
        return np.column_stack([1 - p, p])

    def predict(self, X) -> np.ndarray:
        return (self.score_samples(X) > 0.5).astype(int)

    def _get_state(self) -> dict:
        return {"mean": self.mean_, "std": self.std_, "members": self.members_,
                "val_losses": self.val_losses_}

    def _set_state(self, state: dict) -> None:
        self.mean_, self.std_ = np.asarray(state["mean"]), np.asarray(state["std"])
        self.members_ = state["members"]
        self.val_losses_ = state.get("val_losses", [])


CLASSIFIERS = {"hgb": HGBEnsemble, "mlp": MLPEnsemble}


def make_classifier(kind: str = "hgb", **params) -> Estimator:
    """A fresh classifier by name (``"hgb"`` or ``"mlp"``) with the given hyper-parameters."""
    try:
        cls = CLASSIFIERS[kind]
    except KeyError:
        raise ValueError(f"classifier {kind!r} unknown (choose from {', '.join(CLASSIFIERS)})") from None
    unknown = sorted(set(params) - set(cls().get_params()))
    if unknown:
        raise ValueError(f"classifier {kind!r}: unknown hyper-parameter(s) {', '.join(unknown)}")
    return cls(**params)


def classifier_from_payload(payload: dict) -> Estimator:
    for cls in CLASSIFIERS.values():
        if payload["class"].endswith(cls.__qualname__):
            return cls.from_payload(payload)
    raise ValueError(f"unknown classifier class {payload['class']!r}")


def clone_classifier(clf: Estimator) -> Estimator:
    return copy.deepcopy(clf)
