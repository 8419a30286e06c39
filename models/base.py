"""Shared estimator machinery: scikit-learn parameters plus one-file ``save`` / ``load``.

Every lhcad model is a :class:`sklearn.base.BaseEstimator` (hyper-parameters in ``__init__``,
``get_params``) whose learned state is a plain dict of numpy arrays, torch ``state_dict`` s and
nested estimators. :meth:`Estimator.save` writes ``{"class", "params", "state"}`` with
``torch.save`` (atomically: temporary file + rename), :meth:`Estimator.load` rebuilds it.
Artefacts are pickles: load only files you (or your jobs) wrote.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from sklearn.base import BaseEstimator


def resolve_device(device: str = "auto") -> str:
    """``"auto"`` → ``"cuda"`` when a GPU is visible, else ``"cpu"``; other values pass through."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but torch sees no CUDA device")
    return device


def atomic_torch_save(obj: Any, path: str | Path) -> Path:
    """``torch.save`` to ``path`` via a temporary file, so a killed task never leaves half a file."""
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)
    return path


class Estimator(BaseEstimator):
    """Base of every lhcad model: implement ``_get_state`` / ``_set_state``."""

    def _get_state(self) -> dict:  # pragma: no cover - abstract
        raise TypeError(f"{type(self).__name__} does not define _get_state")

    def _set_state(self, state: dict) -> None:  # pragma: no cover - abstract
        raise TypeError(f"{type(self).__name__} does not define _set_state")

    def _check_fitted(self) -> None:
        if not getattr(self, "fitted_", False):
            raise RuntimeError(f"{type(self).__name__} is not fitted: call fit() or load() first")

    def to_payload(self) -> dict:
        """The estimator as a picklable dict (used by ``save`` and by composite estimators)."""
        self._check_fitted()
        return {"class": f"{type(self).__module__}.{type(self).__qualname__}",
                "params": self.get_params(deep=False), "state": self._get_state()}

    @classmethod
    def from_payload(cls, payload: dict) -> Estimator:
        name = f"{cls.__module__}.{cls.__qualname__}"
        if payload.get("class") != name:
            raise ValueError(f"payload holds a {payload.get('class')}, not a {name}")
        obj = cls(**payload["params"])
        obj._set_state(payload["state"])
        obj.fitted_ = True
        return obj

    def save(self, path: str | Path) -> Path:
        """Write the fitted estimator to one file (``torch.save`` format)."""
        return atomic_torch_save(self.to_payload(), path)

    @classmethod
    def load(cls, path: str | Path) -> Estimator:
        """Read an estimator written by :meth:`save` (weights mapped to CPU, then moved to its device)."""
        import torch

        try:
            payload = torch.load(Path(path), map_location="cpu", weights_only=False)
        except FileNotFoundError:
            raise FileNotFoundError(f"{path}: no saved {cls.__name__} here") from None
        return cls.from_payload(payload)
