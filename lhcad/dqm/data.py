"""Per-lumisection histograms of monitor elements (MEs), as the LumiProcessor writes them.

Store layout (see :mod:`lhcad.store`)::

    lumi/<ME>/values      (n_LS, *bins) float64   counts per LS
    lumi/<ME>/variances   (n_LS, *bins) float64   (sum of squared weights)
    lumi/<ME>/run, lumi   (n_LS,) int64
    lumi/<ME>/.attrs["axes"]                       UHI-serialised axes

Multi-dimensional MEs (e.g. jet η-φ maps) are flattened to one bin vector per LS. Each LS is normalised
to unit area; its number of entries is kept, because the reconstruction score is Poisson-aware and
because LSs with fewer than ``min_entries`` entries are *marked* low-statistics (never dropped).

>>> import numpy as np
>>> fractions, entries = normalise(np.array([[1.0, 3.0], [0.0, 0.0]]))
>>> fractions.tolist(), entries.tolist()
([[0.25, 0.75], [0.0, 0.0]], [4.0, 0.0])
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import zarr

from lhcad.store import StoreError, open_store, write_hist

LUMI_TABLE = "lumi"


@dataclass
class LSHistograms:
    """The per-LS histograms of one ME, sorted by (run, lumi)."""

    me: str
    counts: np.ndarray  # (n_LS, n_bins) flattened counts
    variances: np.ndarray | None
    run: np.ndarray  # (n_LS,) int64
    lumi: np.ndarray  # (n_LS,) int64
    axes: list  # UHI axes
    shape: tuple[int, ...]  # bin shape before flattening
    rows: np.ndarray | None = None  # row index of each LS in the store's arrays

    @property
    def n_ls(self) -> int:
        return len(self.run)

    @property
    def n_bins(self) -> int:
        return self.counts.shape[1]

    @property
    def entries(self) -> np.ndarray:
        return self.counts.sum(axis=1)

    @property
    def fractions(self) -> np.ndarray:
        return normalise(self.counts)[0]

    def runs(self) -> np.ndarray:
        return np.unique(self.run)

    def select(self, mask: np.ndarray) -> LSHistograms:
        """The LSs where ``mask`` is true (order kept)."""
        return LSHistograms(
            self.me, self.counts[mask], None if self.variances is None else self.variances[mask],
            self.run[mask], self.lumi[mask], self.axes, self.shape,
            None if self.rows is None else self.rows[mask],
        )

    def for_runs(self, runs) -> LSHistograms:
        return self.select(np.isin(self.run, np.asarray(list(runs), dtype=np.int64)))


def normalise(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-LS unit-area fractions and entries; an empty LS gives all-zero fractions (and 0 entries)."""
    counts = np.asarray(counts, dtype=np.float64)
    entries = counts.sum(axis=1)
    safe = np.where(entries > 0, entries, 1.0)
    return counts / safe[:, None], entries


def low_stats_mask(entries: np.ndarray, min_entries: int) -> np.ndarray:
    """True for LSs with fewer than ``min_entries`` entries (these are reported as 'low_stats')."""
    return np.asarray(entries) < min_entries


def list_mes(root: zarr.Group | str) -> list[str]:
    """Names of the MEs in the store's ``lumi/`` group."""
    if isinstance(root, str):
        root = open_store(root, mode="r")
    if LUMI_TABLE not in root:
        raise StoreError(f"{root.store}: group 'lumi' not found — run `lhcad process lumi` first")
    grp = root[LUMI_TABLE]
    return sorted(k for k in grp.group_keys() if "values" in grp[k])


def read_me(root: zarr.Group | str, me: str, runs=None) -> LSHistograms:
    """Read one ME's per-LS histograms (optionally only ``runs``), sorted by (run, lumi)."""
    if isinstance(root, str):
        root = open_store(root, mode="r")
    have = list_mes(root)
    if me not in have:
        raise StoreError(f"{root.store}: monitor element lumi/{me} not found (have: {', '.join(have) or 'none'})")
    grp = root[LUMI_TABLE][me]
    for name in ("values", "run", "lumi"):
        if name not in grp:
            raise StoreError(f"{root.store}: lumi/{me}/{name} missing")
    run = np.asarray(grp["run"][...], dtype=np.int64)
    lumi = np.asarray(grp["lumi"][...], dtype=np.int64)
    sel = np.ones(len(run), bool) if runs is None else np.isin(run, np.asarray(list(runs), dtype=np.int64))
    idx = np.flatnonzero(sel)
    idx = idx[np.lexsort((lumi[idx], run[idx]))]
    raw = grp["values"]
    if raw.shape[0] != len(run) or len(lumi) != len(run):
        raise StoreError(
            f"{root.store}: lumi/{me}: values has {raw.shape[0]} rows, run {len(run)}, lumi {len(lumi)}"
        )
    values = np.asarray(raw[...])[idx]
    variances = np.asarray(grp["variances"][...])[idx] if "variances" in grp else None
    shape = tuple(values.shape[1:])
    flat = values.reshape(len(idx), -1)
    key = run[idx] * (1 << 32) + lumi[idx]
    if len(np.unique(key)) != len(key):
        raise StoreError(f"{root.store}: lumi/{me}: duplicate (run, lumi) rows")
    return LSHistograms(
        me, flat, None if variances is None else variances.reshape(len(idx), -1),
        run[idx], lumi[idx], list(grp.attrs.get("axes", [])), shape, idx,
    )


def write_me(
    root: zarr.Group, me: str, values: np.ndarray, run: np.ndarray, lumi: np.ndarray,
    axes_uhi: list, variances: np.ndarray | None = None,
) -> zarr.Group:
    """Write one ME in the LumiProcessor's layout (used by tests and importers of external DQM data)."""
    grp = root.require_group(LUMI_TABLE).require_group(me)
    write_hist(grp, values, values if variances is None else variances, axes_uhi)
    grp.create_array("run", data=np.asarray(run, dtype=np.int64), overwrite=True)
    grp.create_array("lumi", data=np.asarray(lumi, dtype=np.int64), overwrite=True)
    return grp


def axis_edges(axis: dict, n_bins: int) -> np.ndarray:
    """Bin edges of one UHI axis with ``n_bins`` stored bins (flow bins, if stored, get ±inf edges)."""
    kind = axis.get("type")
    if kind == "regular":
        edges = np.linspace(axis["lower"], axis["upper"], int(axis["bins"]) + 1)
    elif kind == "variable":
        edges = np.asarray(axis["edges"], dtype=float)
    elif kind == "integer":
        edges = np.arange(axis["lower"], axis["upper"] + 1, dtype=float) - 0.5
    else:
        edges = np.arange(n_bins + 1, dtype=float) - 0.5
    n_core = len(edges) - 1
    if n_bins == n_core + 2:
        edges = np.concatenate([[-np.inf], edges, [np.inf]])
    elif n_bins == n_core + 1 and axis.get("overflow"):
        edges = np.concatenate([edges, [np.inf]])
    elif n_bins != n_core:
        edges = np.arange(n_bins + 1, dtype=float) - 0.5
    return edges


def axis_label(axis: dict, default: str) -> str:
    meta = axis.get("metadata", {}) or {}
    return meta.get("label") or meta.get("name") or default
