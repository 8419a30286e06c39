"""L1 inputs: the store's ``l1/particles`` (N, 19, 3) → 57 scaled features, and the data splits.

The 19 objects are MET, 4 electrons, 4 muons, 10 jets, each (pT, η, φ), pT-ordered and zero-padded
(the ADC2021 layout). :class:`L1Preprocessor` maps every object to

* ``pT → log1p(pT) / s_type`` — ``s_type`` is the 99th percentile of ``log1p(pT)`` of the *present*
  objects of that type (MET, e, μ, jet) in the training data, so typical values are in [0, 1];
* ``η → η / η_max(type)`` with η_max = 1 (MET: η is 0), 3.0 (e), 2.1 (μ), 4.0 (jets);
* ``φ → φ / π``.

A padded object (pT = 0) stays exactly 0 in all three features: the zero-padding *is* the mask
(``log1p(0) = 0``), and every present object has ``log1p(pT) > 0``. The fitted scales are saved with
each model (``to_dict``/``from_dict``). ``quantize_bits`` optionally rounds the features to a
fixed-point grid ``ap_fixed<W, I>`` (what the firmware sees).

>>> import numpy as np
>>> p = np.zeros((2, 19, 3), np.float32); p[:, 0] = [50.0, 0.0, 1.0]; p[:, 1] = [30.0, 0.5, -2.0]
>>> pre = L1Preprocessor().fit(p)
>>> x = pre.transform(p)
>>> x.shape, float(x[0, 3 * 2])   # third object (padded electron) stays 0
((2, 57), 0.0)
"""

from __future__ import annotations

import numpy as np

from lhcad.store import L1_N_OBJECTS, L1_SLICES

#: signal datasets of ADC2021 (the generator's names) and their display labels
SIGNALS = {"ato4l": "A→4ℓ", "lq_btau": "LQ→bτ", "h0_tautau": "h0→ττ", "hch_taunu": "h±→τν"}
BACKGROUND = "sm"
BLACKBOX = "blackbox"
_ETA_MAX = {"met": 1.0, "electron": 3.0, "muon": 2.1, "jet": 4.0}
N_FEATURES = 3 * L1_N_OBJECTS


def object_types() -> np.ndarray:
    """Type index (0 MET, 1 e, 2 μ, 3 jet) of each of the 19 object slots."""
    t = np.zeros(L1_N_OBJECTS, dtype=np.int64)
    for i, name in enumerate(L1_SLICES):
        t[L1_SLICES[name]] = i
    return t


class L1Preprocessor:
    """log-pT / η / φ scaling per object type; zero padding kept at exactly 0 (see module doc)."""

    def __init__(self, quantile: float = 0.99):
        self.quantile = quantile
        self.pt_scale_: np.ndarray | None = None  # (4,) one per object type

    def fit(self, particles: np.ndarray) -> L1Preprocessor:
        particles = _check(particles)
        types = object_types()
        lpt = np.log1p(np.clip(particles[..., 0], 0, None))
        scale = np.ones(4)
        for t in range(4):
            v = lpt[:, types == t]
            v = v[v > 0]
            if v.size:
                scale[t] = max(float(np.quantile(v, self.quantile)), 1e-3)
        self.pt_scale_ = scale
        return self

    def transform(self, particles: np.ndarray) -> np.ndarray:
        """(N, 19, 3) → (N, 57) float32, object-major: [pT0, η0, φ0, pT1, ...]."""
        if self.pt_scale_ is None:
            raise RuntimeError("L1Preprocessor is not fitted")
        particles = _check(particles)
        types = object_types()
        eta_max = np.array([_ETA_MAX[n] for n in L1_SLICES])[types]
        out = np.empty(particles.shape, dtype=np.float32)
        present = particles[..., 0] > 0
        out[..., 0] = np.log1p(np.clip(particles[..., 0], 0, None)) / self.pt_scale_[types]
        out[..., 1] = np.where(present, particles[..., 1] / eta_max, 0.0)
        out[..., 2] = np.where(present, particles[..., 2] / np.pi, 0.0)
        return out.reshape(len(out), N_FEATURES)

    def to_dict(self) -> dict:
        return {"quantile": self.quantile, "pt_scale": None if self.pt_scale_ is None else self.pt_scale_.tolist()}

    @classmethod
    def from_dict(cls, d: dict) -> L1Preprocessor:
        obj = cls(quantile=d["quantile"])
        obj.pt_scale_ = None if d["pt_scale"] is None else np.asarray(d["pt_scale"], dtype=np.float64)
        return obj


def quantize_fixed(x: np.ndarray, width: int = 16, integer: int = 6) -> np.ndarray:
    """Round to the ``ap_fixed<width, integer>`` grid (round-to-nearest, saturate), as float32."""
    step = 2.0 ** -(width - integer)
    hi = 2.0 ** (integer - 1) - step
    return np.clip(np.round(np.asarray(x, dtype=np.float64) / step) * step, -(2.0 ** (integer - 1)), hi).astype(np.float32)


def _check(particles: np.ndarray) -> np.ndarray:
    particles = np.asarray(particles, dtype=np.float32)
    if particles.ndim != 3 or particles.shape[1:] != (L1_N_OBJECTS, 3):
        raise ValueError(f"L1 particles must have shape (N, {L1_N_OBJECTS}, 3), got {particles.shape}")
    return particles


# ------------------------------------------------------------------------------------- store access
def load_l1(store, datasets: list[str] | None = None) -> dict[str, np.ndarray]:
    """Read ``l1/{particles,dataset,truth_label}`` and return them with ``dataset_name`` (str array).

    ``datasets`` keeps only those names (all when None); an unknown name raises a clear error.
    """
    from lhcad.store import dataset_names, open_store, read_columns

    root = open_store(store, mode="r") if isinstance(store, str) else store
    names = dataset_names(root, "l1")
    cols = read_columns(root, "l1", ["dataset", "truth_label"])
    code = np.asarray(cols["dataset"])
    if datasets is not None:
        missing = [d for d in datasets if d not in names]
        if missing:
            raise ValueError(f"{root.store}: l1 dataset(s) {missing} not in the store (have: {names})")
        keep = np.isin(code, [names.index(d) for d in datasets])
        rows = np.flatnonzero(keep)
    else:
        rows = None
    part = read_columns(root, "l1", ["particles"], rows=rows)["particles"] if rows is None or rows.size else (
        np.zeros((0, L1_N_OBJECTS, 3), np.float32))
    if rows is not None:
        code, truth = code[rows], np.asarray(cols["truth_label"])[rows]
    else:
        truth = np.asarray(cols["truth_label"])
    lookup = np.asarray(names + ["?"], dtype=object)
    return {"particles": np.asarray(part, dtype=np.float32), "dataset": code, "truth_label": truth,
            "dataset_name": lookup[np.where(code < len(names), code, len(names))].astype(str),
            "row": np.arange(len(code)) if rows is None else rows}


def split_background(n: int, train_fraction: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Seeded permutation split of ``n`` background rows into (train, test) index arrays."""
    perm = np.random.default_rng(seed).permutation(n)
    n_train = int(round(train_fraction * n))
    return np.sort(perm[:n_train]), np.sort(perm[n_train:])
