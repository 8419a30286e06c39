"""Reading the stats stage's inputs from the Zarr store: m_jj of one dataset and the AD scores.

Score keys follow the store contract ``<method>__<lo>_<hi>`` (SR window in GeV, e.g.
``cathode__3300_3700``), written by the models stage with :func:`lhcad.store.write_scores`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from lhcad import store as _store
from lhcad.config import ConfigError

log = logging.getLogger(__name__)


@dataclass
class DijetData:
    """m_jj (and weights, truth) of the searched dataset, plus the store rows they came from."""

    store: str
    rows: np.ndarray
    mjj: np.ndarray
    weight: np.ndarray
    truth_label: np.ndarray


def load_dijet(store: str, dataset: str = "data") -> DijetData:
    """The ``dataset`` rows of ``dijet/`` (other datasets, e.g. ``extra_bkg`` or ``test``, are not searched)."""
    try:
        root = _store.open_store(store, mode="r")
        names = _store.dataset_names(root, "dijet")
        if dataset not in names:
            raise ConfigError(f"{store}: dijet dataset {dataset!r} not found (have: {', '.join(names) or 'none'})")
        cols = _store.read_columns(root, "dijet", ["mjj", "weight", "dataset", "truth_label"])
    except _store.StoreError as exc:
        raise ConfigError(str(exc)) from None
    rows = np.flatnonzero(cols["dataset"] == names.index(dataset))
    return DijetData(store, rows, cols["mjj"][rows].astype(float), cols["weight"][rows].astype(float),
                     cols["truth_label"][rows])


def score_keys(store: str) -> list[str]:
    """All score keys under ``dijet/scores``."""
    root = _store.open_store(store, mode="r")
    try:
        grp = root["dijet"]["scores"]
    except KeyError:
        return []
    return sorted(grp.array_keys())


def window_key(method: str, sr: tuple[float, float]) -> str:
    return f"{method}__{sr[0]:g}_{sr[1]:g}"  # as the models stage writes it (models/jobs.py)


def _parse_window(key: str) -> tuple[float, float] | None:
    try:
        lo, hi = key.split("__", 1)[1].split("_")
        return float(lo), float(hi)
    except (IndexError, ValueError):
        return None


def resolve_score_key(store: str, method: str, sr: tuple[float, float], score_key: str = "auto") -> str:
    """The score key used for window ``sr``.

    ``score_key`` other than ``auto`` is used as given. ``auto`` takes ``<method>__<lo>_<hi>`` when the
    models stage trained that window, else the method's key whose window centre is nearest (logged and
    recorded in the results as ``score_key``).
    """
    keys = score_keys(store)
    if score_key != "auto":
        if score_key not in keys:
            raise ConfigError(f"{store}: scores dijet/scores/{score_key} not found (have: {', '.join(keys) or 'none'})")
        return score_key
    exact = window_key(method, sr)
    if exact in keys:
        return exact
    own = [(k, w) for k in keys if k.startswith(f"{method}__") and (w := _parse_window(k)) is not None]
    if not own:
        raise ConfigError(
            f"{store}: no scores for method {method!r} (stats.score); have: {', '.join(keys) or 'none'}"
        )
    centre = 0.5 * (sr[0] + sr[1])
    key = min(own, key=lambda kw: abs(0.5 * (kw[1][0] + kw[1][1]) - centre))[0]
    log.warning("window %.0f-%.0f GeV: no %s; using %s", sr[0], sr[1], exact, key)
    return key


def load_scores(store: str, key: str, rows: np.ndarray) -> np.ndarray:
    """Scores of ``key`` for the given store rows."""
    try:
        return _store.read_scores(store, "dijet", key)[rows].astype(float)
    except _store.StoreError as exc:
        raise ConfigError(str(exc)) from None


class StoreScores:
    """Callable ``(lo, hi) -> (key, scores)`` for :func:`lhcad.stats.scan.scan`, caching each key once."""

    def __init__(self, data: DijetData, method: str, score_key: str = "auto"):
        self.data, self.method, self.score_key = data, method, score_key
        self._cache: dict[str, np.ndarray] = {}

    def __call__(self, sr: tuple[float, float]) -> tuple[str, np.ndarray]:
        key = resolve_score_key(self.data.store, self.method, tuple(sr), self.score_key)
        if key not in self._cache:
            self._cache[key] = load_scores(self.data.store, key, self.data.rows)
        return key, self._cache[key]
