"""Import the ADC2021 (Anomaly Detection Data Challenge 2021) files into the ``l1/`` table.

The files
---------
Zenodo records of the "ADC2021" challenge (Govorkova et al., "LHC physics dataset for unsupervised
New Physics detection at 40 MHz", Sci. Data 9, 118 (2022)): ``background_for_training.h5`` (SM
mix), the signals ``Ato4l_lepFilter_13TeV.h5`` (A → 4ℓ), ``leptoquark_LOWMASS_lepFilter_13TeV.h5``
(LQ → bτ), ``hToTauTau_13TeV_PU20.h5`` (h⁰ → ττ), ``hChToTauNu_13TeV_PU20.h5`` (h± → τν), and the
black box ``BlackBox_background_mix.h5``. Each holds the HDF5 dataset ``Particles`` of shape
(N, 19, 4): per event the slots

    0        MET             class 1
    1 – 4    4 electrons     class 2
    5 – 8    4 muons         class 3
    9 – 18   10 jets         class 4

× (pT [GeV], η, φ, class), objects pT-ordered within their type and zero-padded (class 0 in an empty
slot). Other datasets in the file (``Particles_Classes``, ``Particles_Names``) are not needed.

The derived files of the ADC2021 example code (``create_datasets.py`` of the challenge's example
model) are accepted too: it drops the class column (``Particles[:, :, :-1]``), splits the background
into ``X_train`` / ``X_test`` / ``X_val`` and flattens each event with
``reshape(N, 57)`` — row-major, so feature ``3 k + j`` is slot ``k``, quantity ``j`` (0 pT, 1 η,
2 φ): ``[MET_pT, MET_η, MET_φ, e1_pT, e1_η, e1_φ, …, jet10_φ]``; signals are written as ``Data``.
Its convolutional variant keeps (N, 19, 3); both shapes are read.

What is stored
--------------
``l1/particles`` (N, 19, 3) float32 [pT, η, φ] in the slot order above (the class column is dropped
after checking, chunk by chunk, that every class is the slot's class or 0 = padding), plus
``run = 0``, ``luminosityBlock = 0``, ``event`` = row index in the source file (keys of a derived
file counted in import order), ``dataset`` (code of ``dataset`` in ``l1.attrs["datasets"]``) and
``truth_label``: 0 for background dataset names (``background``, ``bkg``, ``sm``, ``qcd``, ...),
-1 for a black box (``blackbox*``, ``black_box*``) and 1 for any other name (a signal), unless
``truth_label`` is given. Reads are h5py row slices of ``chunk_rows`` events, so the
multi-million-event background never sits in memory. Provenance (file, keys, sha256, rows) goes to
``provenance["imports"]``.

>>> import_adc2021(["Ato4l_lepFilter_13TeV.h5"], "adc.zarr", dataset="ato4l")  # doctest: +SKIP
{'table': 'l1', 'dataset': 'ato4l', 'rows': ..., 'truth_label': 1, ...}
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from pathlib import Path

import h5py
import numpy as np
import zarr

from lhcad import store as _store
from lhcad.importers import _common
from lhcad.importers._common import ImporterError
from lhcad.log import progress

log = logging.getLogger(__name__)

N_OBJ = _store.L1_N_OBJECTS  # 19
PARTICLES = "Particles"
DERIVED_KEYS = ("X_train", "X_test", "X_val", "Data")
DEFAULT_CHUNK_ROWS = 131_072

#: class id the ADC2021 files give each of the 19 slots (0 marks an empty, zero-padded slot)
SLOT_CLASS = np.zeros(N_OBJ, dtype=np.int64)
for _cls, _name in ((1, "met"), (2, "electron"), (3, "muon"), (4, "jet")):
    SLOT_CLASS[_store.L1_SLICES[_name]] = _cls
_SLOT_NAMES = [f"{n}{i - s.start + 1}" if n != "met" else "MET"
               for n, s in _store.L1_SLICES.items() for i in range(s.start, s.stop)]

_FILLED = ("particles", "run", "luminosityBlock", "event", "dataset", "truth_label")
BACKGROUND_NAMES = frozenset({"background", "bkg", "sm", "qcd", "background_for_training", "sm_mix"})


def infer_truth_label(dataset: str) -> int:
    """0 for a background name, -1 for a black box, 1 (signal) otherwise."""
    name = dataset.lower()
    if name in BACKGROUND_NAMES:
        return 0
    if name.startswith(("blackbox", "black_box", "black-box")):
        return -1
    return 1


def _layout(path: Path, key: str, shape: tuple[int, ...], dtype: np.dtype) -> str:
    """``"particles"`` for (N, 19, 4), ``"flat"`` for (N, 57), ``"objects"`` for (N, 19, 3)."""
    if dtype.kind not in "fiu":
        raise ImporterError(f"{path}: dataset {key!r} has dtype {dtype}; expected numbers")
    if key == PARTICLES:
        if len(shape) != 3 or shape[1:] != (N_OBJ, 4):
            raise ImporterError(
                f"{path}: dataset 'Particles' has shape {shape}; expected (N, 19, 4) = "
                f"MET, 4 e, 4 mu, 10 jets x (pT, eta, phi, class)"
            )
        return "particles"
    if len(shape) == 2 and shape[1] == 3 * N_OBJ:
        return "flat"
    if len(shape) == 3 and shape[1:] == (N_OBJ, 3):
        return "objects"
    if len(shape) == 3 and shape[1:] == (N_OBJ, 4):
        return "particles"
    raise ImporterError(
        f"{path}: dataset {key!r} has shape {shape}; expected (N, 57) (ADC2021 example-code layout), "
        f"(N, 19, 3) or (N, 19, 4)"
    )


def _select_keys(h5: h5py.File, path: Path, keys: Sequence[str] | None) -> list[str]:
    have = sorted(h5.keys())
    if keys:
        for k in keys:
            if k not in h5 or not isinstance(h5[k], h5py.Dataset):
                raise ImporterError(f"{path}: no dataset {k!r} (has: {', '.join(have) or 'none'})")
        return list(keys)
    if PARTICLES in h5:
        return [PARTICLES]
    found = [k for k in DERIVED_KEYS if k in h5]
    if not found:
        raise ImporterError(
            f"{path}: no dataset 'Particles' (nor derived {', '.join(DERIVED_KEYS)}); has: {', '.join(have) or 'none'}"
        )
    return found


def to_particles(block: np.ndarray, layout: str, where: str, first_row: int = 0) -> np.ndarray:
    """One chunk of a file's array as (n, 19, 3) float32 [pT, eta, phi].

    ``particles`` input: the class column is checked against :data:`SLOT_CLASS` (or 0 = padding)
    and dropped; ``flat`` (n, 57) input is reshaped row-major; ``objects`` is taken as is.
    """
    if layout == "flat":
        return np.asarray(block, dtype=np.float32).reshape(len(block), N_OBJ, 3)
    if layout == "objects":
        return np.asarray(block, dtype=np.float32)
    cls = block[:, :, 3]
    bad = (cls != SLOT_CLASS) & (cls != 0)
    if bad.any():
        row, slot = np.argwhere(bad)[0]
        raise ImporterError(
            f"{where}: event {first_row + int(row)} slot {int(slot)} ({_SLOT_NAMES[slot]}) has class "
            f"{float(cls[row, slot]):g}; the ADC2021 layout has {int(SLOT_CLASS[slot])} there (or 0 = empty)"
        )
    return np.asarray(block[:, :, :3], dtype=np.float32)


def import_adc2021(
    paths: str | Path | Iterable[str | Path],
    store: str | Path | zarr.Group,
    dataset: str,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    keys: Sequence[str] | None = None,
    truth_label: int | None = None,
) -> dict:
    """Append ADC2021 files to ``l1/`` of ``store`` as dataset ``dataset``.

    Parameters
    ----------
    paths : ADC2021 ``.h5`` files (``Particles`` (N, 19, 4)) or derived example-code files
        (``X_train``/``X_test``/``X_val``/``Data`` (N, 57)).
    store : Zarr store path / URL or an open root group (created if missing).
    dataset : dataset name, e.g. ``sm``, ``ato4l``, ``lq_btau``, ``h0_tautau``, ``hch_taunu``,
        ``blackbox``.
    chunk_rows : events read and written per step; also the Zarr chunk length when the table is
        created here, so every full step writes whole chunks (no read-modify-write).
    keys : HDF5 datasets to read from every file (default: ``Particles`` if present, else every
        derived key present, in the order ``X_train, X_test, X_val, Data``).
    truth_label : label for every imported event (default: :func:`infer_truth_label` of ``dataset``).

    Returns ``{"table", "dataset", "rows", "n_rows", "truth_label", "files": [{"path", "sha256",
    "rows", "keys": [{"key", "layout", "rows"}]}]}``. Raises :class:`ImporterError` naming the file
    and key for a non-HDF5 file, a missing key, a wrong shape or a class that does not match its
    slot; on any error the table is cut back to its previous rows.
    """
    files = _common.as_paths(paths)
    if not dataset:
        raise ImporterError("a dataset name is needed (e.g. sm, ato4l, blackbox)")
    if chunk_rows < 1:
        raise ImporterError(f"chunk_rows must be ≥ 1, got {chunk_rows}")
    label = infer_truth_label(dataset) if truth_label is None else int(truth_label)
    log.info("dataset %r: truth_label = %d%s", dataset, label, "" if truth_label is not None else " (from its name)")

    infos = []
    for path in files:  # check every file before writing anything
        _common.check_hdf5(path)
        with h5py.File(path, "r") as h5:
            parts = []
            for k in _select_keys(h5, path, keys):
                ds = h5[k]
                parts.append({"key": k, "layout": _layout(path, k, ds.shape, ds.dtype), "rows": int(ds.shape[0])})
        infos.append({"path": path, "parts": parts, "rows": sum(p["rows"] for p in parts)})
    root = _common.open_root(store)
    _common.check_appendable(root, "l1", _store.L1_COLUMNS, f"{root.store}")
    for info in infos:
        info["sha256"] = _common.sha256(info["path"])
        _common.check_not_imported(root, "l1", dataset, info["path"], info["sha256"])
    _common.check_distinct(infos)

    unknown = [c for c in _store.L1_COLUMNS if c not in _FILLED]
    if unknown:
        log.info("l1 columns not in ADC2021 files, stored as NaN: %s", ", ".join(unknown))
    total = sum(i["rows"] for i in infos)
    summary_files = []
    dtypes = _common.stored_dtypes(root, "l1")
    with _common.Rollback(root, "l1"), progress() as bar:
        code = _store.dataset_code(root, "l1", dataset)
        task = bar.add_task(f"import adc2021 → l1/{dataset}", total=total)
        for info in infos:
            path = info["path"]
            event = 0
            with h5py.File(path, "r") as h5:
                for part in info["parts"]:
                    ds = h5[part["key"]]
                    where = f"{path}: dataset {part['key']!r}"
                    for start in range(0, part["rows"], chunk_rows):
                        block = ds[start:start + chunk_rows]
                        n = len(block)
                        cols = {
                            "particles": to_particles(block, part["layout"], where, start),
                            "run": np.zeros(n, dtype=np.int64),  # dtypes as the processors write them
                            "luminosityBlock": np.zeros(n, dtype=np.int64),
                            "event": np.arange(event, event + n, dtype=np.int64),
                            "dataset": np.full(n, code, dtype=np.int32),
                            "truth_label": np.full(n, label, dtype=np.int32),
                        }
                        del block
                        cols = {name: cols[name] if name in cols else np.full(n, np.nan, dtype=np.float32)
                                for name in _store.L1_COLUMNS}
                        _store.append_columns(root, "l1", _common.conform_columns(cols, dtypes), chunk_rows=chunk_rows)
                        event += n
                        bar.advance(task, n)
            summary_files.append({"path": str(path.resolve()), "sha256": info["sha256"], "rows": info["rows"],
                                  "keys": info["parts"]})
            log.info("%s: %d events → l1/ dataset %r", path, info["rows"], dataset)
        _common.record_import(root, {
            "format": "adc2021", "table": "l1", "dataset": dataset, "truth_label": label,
            "files": summary_files,
            "synthesised": {"run": 0, "luminosityBlock": 0, "event": "row index in the file"},
        })
    return {"table": "l1", "dataset": dataset, "rows": total, "n_rows": _store.n_rows(root, "l1"),
            "truth_label": label, "files": summary_files}
