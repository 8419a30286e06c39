"""Shared pieces of the generators: errors, seeding, four-vectors and atomic NanoAOD writing.

Every generator writes real NanoAOD-format ROOT files: a TTree ``Events`` with ``run`` (uint32),
``luminosityBlock`` (uint32), ``event`` (uint64), flat event branches (``MET_pt``, ``PV_npvs``,
``truth_label``, ...) and collections written from ``ak.zip`` records, so that uproot emits the
``n<Coll>`` counter plus ``<Coll>_<var>`` branches that coffea's ``NanoAODSchema`` expects
(``file.mktree`` + ``extend``; ``file["Events"] = ...`` would write an RNTuple in uproot >= 5.7).

Output is atomic: every file is written under a hidden temporary name in the output directory and
renamed when complete, and :class:`OutputDir` removes everything it wrote if generation fails, so a
bad input or an interrupted run never leaves partial files behind.

Seeding: every stream of random numbers comes from ``numpy.random.default_rng([seed, stream, part])``,
i.e. a ``SeedSequence`` of the user seed, a fixed stream id per sample kind and the block index. The
content of a file is therefore a pure function of (seed, options) and does not depend on how many
processes or in which order files are produced.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import awkward as ak
import numpy as np

from lhcad.config import ConfigError

log = logging.getLogger(__name__)

#: Compression of the written ROOT files. LZ4 is ~10x faster to write than ZLIB on float data and is
#: read by every ROOT/uproot version; the content (not the bytes) is what the seed fixes.
COMPRESSION_LEVEL = 1

#: Identifiers of the random streams; fixed so that adding a stream never changes another's numbers.
STREAMS = {
    "qcd": 1, "signal": 2, "extra_bkg": 3, "test_qcd": 4, "test_signal": 5, "shuffle": 6,
    "dqm": 20, "l1": 30, "pilot": 99,
}


class GenerateError(ConfigError):
    """A generator input the user can fix (event count, signal name, output directory): exit 2."""


def rng_for(seed: int, stream: str, part: int = 0) -> np.random.Generator:
    """The random generator of one block of one stream (see module docstring)."""
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, STREAMS[stream], int(part)])


def check_positive(name: str, value: int | None, allow_zero: bool = False) -> None:
    """One clear error for a negative (or zero) event count."""
    if value is None:
        return
    if value < 0 or (value == 0 and not allow_zero):
        need = "a non-negative" if allow_zero else "a positive"
        raise GenerateError(f"{name} must be {need} number of events (got {value})")


# ------------------------------------------------------------------------------------ four-vectors
def p4_from_ptetaphim(pt, eta, phi, m):
    """(px, py, pz, E) arrays from (pT, η, φ, m)."""
    px = pt * np.cos(phi)
    py = pt * np.sin(phi)
    pz = pt * np.sinh(eta)
    e = np.sqrt(px * px + py * py + pz * pz + m * m)
    return px, py, pz, e


def invariant_mass(*p4s) -> np.ndarray:
    """Invariant mass of the sum of several (px, py, pz, E) tuples."""
    px = sum(p[0] for p in p4s)
    py = sum(p[1] for p in p4s)
    pz = sum(p[2] for p in p4s)
    e = sum(p[3] for p in p4s)
    return np.sqrt(np.maximum(e * e - px * px - py * py - pz * pz, 0.0))


def wrap_phi(phi: np.ndarray) -> np.ndarray:
    return (phi + np.pi) % (2 * np.pi) - np.pi


def two_body_momentum(m_parent, m1, m2) -> np.ndarray:
    """Momentum of the daughters in the parent rest frame (0 where kinematically closed)."""
    a = (m_parent**2 - (m1 + m2) ** 2) * (m_parent**2 - (m1 - m2) ** 2)
    return np.sqrt(np.maximum(a, 0.0)) / (2 * m_parent)


def sample_from_pdf(rng: np.random.Generator, pdf, lo: float, hi: float, n: int, grid: int = 4096) -> np.ndarray:
    """Draw ``n`` values from an (unnormalised) 1-D pdf on [lo, hi] by inverse CDF on a log grid."""
    x = np.geomspace(lo, hi, grid)
    w = pdf(x)
    cdf = np.concatenate([[0.0], np.cumsum(0.5 * (w[1:] + w[:-1]) * np.diff(x))])
    cdf /= cdf[-1]
    return np.interp(rng.random(n), cdf, x)


# ------------------------------------------------------------------------------------ collections
def jagged_collection(fields: Mapping[str, np.ndarray], counts: np.ndarray) -> ak.Array:
    """An ``ak.zip`` record collection (one list per event) from flat per-object arrays + counts."""
    return ak.unflatten(ak.zip(dict(fields), depth_limit=1), np.asarray(counts, dtype=np.int64))


def padded_to_collection(
    fields: Mapping[str, np.ndarray],
    valid: np.ndarray,
    order_by: str | None = None,
    dtypes: Mapping[str, Any] | None = None,
) -> ak.Array:
    """A collection from padded (n_events, k) arrays and a validity mask (invalid slots dropped).

    With ``order_by`` the objects are sorted by decreasing value within each event (NanoAOD
    convention); generators that build their slots already ordered pass ``None`` (sorting small
    rows is the most expensive numpy operation here). Fields are cast to ``dtypes[name]``
    (default float32) after dropping the invalid slots.
    """
    if order_by is not None:
        key = np.where(valid, fields[order_by], -np.inf)
        order = np.argsort(-key, axis=1, kind="stable")
        valid = np.take_along_axis(valid, order, axis=1)
        fields = {k: np.take_along_axis(v, order, axis=1) for k, v in fields.items()}
    idx = np.flatnonzero(valid.ravel())
    dtypes = dtypes or {}
    flat = {k: np.ascontiguousarray(v).ravel()[idx].astype(dtypes.get(k, np.float32)) for k, v in fields.items()}
    return jagged_collection(flat, valid.sum(axis=1))


def _branch_types(data: Mapping[str, Any]) -> dict[str, Any]:
    types = {}
    for name, value in data.items():
        if isinstance(value, ak.Array):
            types[name] = value.type.content
        else:
            types[name] = np.asarray(value).dtype
    return types


# ------------------------------------------------------------------------------------ output
class OutputDir:
    """An output directory written atomically: temp names, rename on success, cleanup on failure.

    >>> import tempfile, numpy as np
    >>> with OutputDir(tempfile.mkdtemp()) as out:
    ...     path = out.write_json("truth.json", {"a": 1})
    >>> path.name
    'truth.json'
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path).expanduser().resolve()
        self.written: list[Path] = []
        self._temps: list[Path] = []

    def __enter__(self) -> OutputDir:
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise GenerateError(f"output directory {self.path}: cannot create ({exc.strerror})") from None
        if not self.path.is_dir():
            raise GenerateError(f"output directory {self.path}: exists and is not a directory")
        if not os.access(self.path, os.W_OK | os.X_OK):
            raise GenerateError(f"output directory {self.path}: not writable")
        try:  # access() is not the whole truth (read-only mounts, ACLs): really try
            fd, probe = tempfile.mkstemp(prefix=".lhcad-probe-", dir=self.path)
            os.close(fd)
            os.unlink(probe)
        except OSError as exc:
            raise GenerateError(f"output directory {self.path}: not writable ({exc.strerror})") from None
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        for tmp in self._temps:
            tmp.unlink(missing_ok=True)
        if exc_type is not None:
            for path in self.written:
                path.unlink(missing_ok=True)

    def _tmp(self, name: str) -> Path:
        tmp = self.path / f".{name}.tmp-{os.getpid()}"
        self._temps.append(tmp)
        return tmp

    def _commit(self, tmp: Path, name: str) -> Path:
        final = self.path / name
        os.replace(tmp, final)
        self._temps.remove(tmp)
        self.written.append(final)
        return final

    def write_root(self, name: str, branches: Mapping[str, Any]) -> Path:
        """Write one NanoAOD-style ``Events`` tree (flat arrays + ``ak.zip`` collections)."""
        return self.write_root_chunks(name, [branches])

    def write_root_chunks(self, name: str, chunks: Iterable[Mapping[str, Any]]) -> Path:
        """Write an ``Events`` tree from successive chunks of branches (one basket per chunk).

        Only one chunk is in memory at a time, so files of millions of events need little memory.
        """
        import uproot

        tmp = self._tmp(name)
        with uproot.recreate(tmp, compression=uproot.LZ4(COMPRESSION_LEVEL)) as f:
            tree = None
            for branches in chunks:
                if tree is None:
                    tree = f.mktree("Events", _branch_types(branches), title="Events")
                tree.extend(dict(branches))
            if tree is None:
                raise ValueError(f"{name}: no events to write")
        return self._commit(tmp, name)

    def write_json(self, name: str, obj: Any) -> Path:
        tmp = self._tmp(name)
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")
        return self._commit(tmp, name)

    def write_text(self, name: str, text: str) -> Path:
        tmp = self._tmp(name)
        tmp.write_text(text)
        return self._commit(tmp, name)

    def write_with(self, name: str, writer) -> Path:
        """Let ``writer(tmp_path)`` write a file of any format, then rename it into place."""
        tmp = self._tmp(name)
        writer(tmp)
        return self._commit(tmp, name)


def _json_default(obj):
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def fileset_entry(files: list[Path], metadata: Mapping[str, Any]) -> dict[str, Any]:
    """One dataset of a coffea fileset: ``{"files": {abs path: "Events"}, "metadata": {...}}``."""
    return {"files": {str(p): "Events" for p in files}, "metadata": dict(metadata)}


def split_counts(total: int, per_file: int) -> list[int]:
    """Sizes of the files a sample of ``total`` events is split into (all but the last full)."""
    if total <= 0:
        return []
    n_full, rest = divmod(total, per_file)
    return [per_file] * n_full + ([rest] if rest else [])


def primary_vertex(rng: np.random.Generator, npvs: np.ndarray) -> dict[str, np.ndarray]:
    """NanoAOD ``PV_*`` branches: coffea's VertexArray needs x, y, z besides the pile-up counts.

    The luminous region is Gaussian: σ_x,y = 10 μm around the 2017 beam spot (0.0107, 0.0417) cm,
    σ_z = 3.5 cm; 95 % of the reconstructed vertices are "good".
    """
    n = len(npvs)
    return {
        "PV_npvs": np.asarray(npvs, dtype=np.int32),
        "PV_npvsGood": np.maximum(np.rint(0.95 * np.asarray(npvs)), 1).astype(np.int32),
        "PV_x": (0.0107 + 0.001 * rng.standard_normal(n)).astype(np.float32),
        "PV_y": (0.0417 + 0.001 * rng.standard_normal(n)).astype(np.float32),
        "PV_z": (3.5 * rng.standard_normal(n)).astype(np.float32),
    }
