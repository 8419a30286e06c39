"""Read what the methods need from the Zarr store: features, resonant mass, dataset, truth.

>>> # d = load_dijet("store.zarr"); d.rows("data") -> boolean mask of the data rows
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from lhcad import store as _store

log = logging.getLogger(__name__)

DEFAULT_FEATURES = ("mj1", "delta_m", "tau21_j1", "tau21_j2")


class DataError(ValueError):
    """The store lacks something a method needs (dataset, column, events); the message names it."""


@dataclass
class DijetData:
    """Columns of ``dijet/`` as numpy arrays (rows aligned with the store)."""

    X: np.ndarray            # (n, d) float64 features
    m: np.ndarray            # (n,) resonant mass
    dataset: np.ndarray      # (n,) int codes
    truth: np.ndarray        # (n,) int (-1 unknown, 0 background, 1.. signal)
    features: tuple[str, ...]
    datasets: list[str]
    store: str = ""

    @property
    def n(self) -> int:
        return len(self.m)

    @property
    def finite(self) -> np.ndarray:
        return np.isfinite(self.X).all(axis=1) & np.isfinite(self.m)

    def rows(self, name: str, required: bool = True) -> np.ndarray:
        """Mask of the rows of dataset ``name`` (finite features only)."""
        if name not in self.datasets:
            if required:
                raise DataError(f"{self.store}: dijet dataset {name!r} not in the store "
                                f"(have: {', '.join(self.datasets) or 'none'})")
            return np.zeros(self.n, bool)
        return (self.dataset == self.datasets.index(name)) & self.finite

    def bounds(self, margin: float = 5e-4) -> tuple[np.ndarray, np.ndarray]:
        """A preprocessing box covering every finite row of the table (so SR and SB share it).

        The box hugs the data (``margin`` = 0.05 % of each range): bounded features (τ21 in
        [0.1, 0.98], Δm ≥ 0) then keep their edges at ±∞ in logit space, so a flow cannot put
        template events beyond them. With a 2 % margin the sideband flow leaked 1.6 % of its Δm
        samples below 0 and CATHODE's null-test template AUC was 0.555 instead of 0.531 (same flow).
        """
        X = self.X[self.finite]
        lo, hi = X.min(axis=0), X.max(axis=0)
        width = np.where(hi > lo, hi - lo, 1.0)
        return lo - margin * width, hi + margin * width


def load_dijet(store, features=DEFAULT_FEATURES, resonant: str = "mjj") -> DijetData:
    """Read ``features``, ``resonant``, ``dataset`` and ``truth_label`` of ``dijet/``."""
    root = _store.open_store(store, mode="r") if isinstance(store, str) else store
    features = tuple(features)
    if not features:
        raise DataError("no features given")
    cols = _store.read_columns(root, "dijet", [*features, resonant, "dataset", "truth_label"])
    d = DijetData(
        X=np.column_stack([np.asarray(cols[f], dtype=np.float64) for f in features]),
        m=np.asarray(cols[resonant], dtype=np.float64),
        dataset=np.asarray(cols["dataset"]).astype(int),
        truth=np.asarray(cols["truth_label"]).astype(int),
        features=features,
        datasets=_store.dataset_names(root, "dijet"),
        store=str(store if isinstance(store, str) else root.store),
    )
    bad = (~d.finite).sum()
    if bad:
        log.warning("%s: %d dijet rows have non-finite features; they are not scored (NaN)", d.store, bad)
    return d
