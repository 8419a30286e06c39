"""Import the LHC Olympics 2020 R&D high-level features into the ``dijet/`` table.

The files
---------
Zenodo record "LHC Olympics 2020 R&D dataset" (Kasieczka, Nachman, Shih) ships, next to the raw
hadron lists, the high-level features as pandas HDF5 files:

* ``events_anomalydetection_v2.features.h5`` — 1.1 M events (1 M QCD dijets + 100 k W' → XY,
  X → qq, Y → qq signal), column ``label`` = 1 for signal;
* ``events_anomalydetection_qcd_extra_inneronly_features.h5`` — extra QCD events in the signal
  region only (the "idealized anomaly detector" background; import it as ``--dataset extra_bkg``).

Each holds one DataFrame (read with ``pandas.read_hdf``, needs PyTables) with, for the two leading
anti-kT R = 1.0 jets, in GeV::

    pxj1 pyj1 pzj1 mj1 tau1j1 tau2j1 tau3j1  pxj2 pyj2 pzj2 mj2 tau1j2 tau2j2 tau3j2  [label]

Both pandas layouts are read in row chunks (``HDFStore.select(key, start=, stop=)``): the
``table`` format and the default ``fixed`` format, whose row slices pandas reads straight from the
HDF5 block arrays, so a file never has to fit in memory.

What is stored
--------------
Every column of :data:`lhcad.store.DIJET_COLUMNS`, computed as the processors compute them:

* jets are ordered by mass, ``j1`` the lighter (the LHCO convention; where the file's jet 1 is the
  heavier, the two jets are swapped); ``mj1``, ``mj2`` = ``j1_mass``, ``j2_mass``,
  ``delta_m = mj2 - mj1`` (float32, like ``delta_eta``);
* ``j{1,2}_pt = hypot(px, py)``, ``j{1,2}_eta = asinh(pz / pt)``, ``j{1,2}_phi = atan2(py, px)``,
  ``delta_eta = |eta1 - eta2|`` (of the stored float32 values, as the processor takes it);
* ``mjj`` from the four-vectors, ``E = sqrt(px² + py² + pz² + m²)``,
  ``mjj² = (E1 + E2)² - |p1 + p2|²``;
* ``tau21 = tau2 / tau1`` and ``tau32 = tau3 / tau2`` (``tau21_j1``, ``tau21_j2`` too); where the
  denominator is 0 the numerator is 0 as well (τN falls with N) and the ratio is stored as 0, the
  value the CATHODE preprocessing (``tau2 / (tau1 + 1e-5)``) gives;
* columns the files do not have (``tau43``, ``msoftdrop``, ``nconst``, ``lsf3``, ``btag`` and any
  column added to ``DIJET_COLUMNS`` later) are NaN — named in one log line;
* ``run = 0``, ``luminosityBlock = 0``, ``event`` = the row index in the source file (the files
  carry no event ids); ``weight = 1``;
* ``dataset`` = the code of ``dataset`` (default ``"data"``) in ``dijet.attrs["datasets"]``;
* ``truth_label`` = the file's ``label`` (0 background, 1 signal) with ``label_as_truth``, else -1
  (also -1 when the file has no ``label``).

Preselection
------------
By default every row is imported (the R&D files are already the trigger-level selection the
published LHCO results use). With ``cuts`` (a :class:`lhcad.config.DijetCutsConfig`, e.g. the
defaults of ``lhcad process dijet``: pT > 300 GeV and |η| < 2.5 for both jets, |Δη| < 1.3,
m_jj > 1200 GeV) only the rows passing the processor's cuts are stored, each cut applied to the
stored float32 value as the processor applies it. Two differences remain, both because the files
hold only the two leading jets: the jet-ID requirement cannot be applied (there is no jet ID; it
is logged), and where one of the two leading jets fails pT/η the processor may pair the other one
with a third jet, while the importer drops the event. ``event`` stays the row index in the file, and
the cut flow (``all``, ``two_jets``, ``delta_eta``, ``mjj``, as the processor counts it) is added to
``dijet.attrs["cutflow"][dataset]`` and to the import record.

Provenance (file, key, sha256, rows) goes to ``provenance["imports"]`` of the store root.

>>> import_lhco(["events_anomalydetection_v2.features.h5"], "lhco.zarr")  # doctest: +SKIP
{'table': 'dijet', 'dataset': 'data', 'rows': 1100000, ...}
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
import pandas as pd
import zarr

from lhcad import store as _store
from lhcad.config import DijetCutsConfig
from lhcad.importers import _common
from lhcad.importers._common import ImporterError
from lhcad.log import progress

log = logging.getLogger(__name__)

JET_FIELDS = ("px", "py", "pz", "m", "tau1", "tau2", "tau3")
LHCO_COLUMNS: tuple[str, ...] = tuple(
    f"{v}j{i}" if v != "m" else f"mj{i}" for i in (1, 2) for v in JET_FIELDS
)  # pxj1 pyj1 pzj1 mj1 tau1j1 tau2j1 tau3j1 pxj2 ... tau3j2
LABEL = "label"
DEFAULT_CHUNK_ROWS = 262_144

_FLOAT = np.float32
_INT_DTYPES = {"run": np.int64, "luminosityBlock": np.int64, "event": np.int64,  # as the processors
               "dataset": np.int32, "truth_label": np.int32}


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den, 0 where den == 0 (then num == 0 too for N-subjettiness ratios)."""
    out = np.zeros(np.broadcast(num, den).shape, dtype=np.float64)
    np.divide(num, den, out=out, where=den != 0)
    return out


def lhco_features(frame: pd.DataFrame) -> dict[str, np.ndarray]:
    """The dijet features lhcad computes from one chunk of an LHCO feature table (float64).

    Jets ordered by mass (``j1`` lighter); keys are ``DIJET_COLUMNS`` names, only those the LHCO
    columns determine.
    """
    raw = {c: frame[c].to_numpy(dtype=np.float64) for c in LHCO_COLUMNS}
    swap = raw["mj1"] > raw["mj2"]  # file's jet 1 heavier → it becomes j2

    def jet(i: int) -> dict[str, np.ndarray]:
        a, b = (1, 2) if i == 1 else (2, 1)
        return {v: np.where(swap, raw[f"{v}j{b}" if v != "m" else f"mj{b}"],
                            raw[f"{v}j{a}" if v != "m" else f"mj{a}"]) for v in JET_FIELDS}

    j1, j2 = jet(1), jet(2)
    out: dict[str, np.ndarray] = {}
    for i, j in ((1, j1), (2, j2)):
        pt = np.hypot(j["px"], j["py"])
        with np.errstate(divide="ignore", invalid="ignore"):
            out[f"j{i}_eta"] = np.arcsinh(j["pz"] / pt)
        out[f"j{i}_pt"] = pt
        out[f"j{i}_phi"] = np.arctan2(j["py"], j["px"])
        out[f"j{i}_mass"] = j["m"]
        out[f"j{i}_tau21"] = _ratio(j["tau2"], j["tau1"])
        out[f"j{i}_tau32"] = _ratio(j["tau3"], j["tau2"])
    e1 = np.sqrt(j1["px"] ** 2 + j1["py"] ** 2 + j1["pz"] ** 2 + j1["m"] ** 2)
    e2 = np.sqrt(j2["px"] ** 2 + j2["py"] ** 2 + j2["pz"] ** 2 + j2["m"] ** 2)
    m2 = (e1 + e2) ** 2 - ((j1["px"] + j2["px"]) ** 2 + (j1["py"] + j2["py"]) ** 2
                           + (j1["pz"] + j2["pz"]) ** 2)
    out["mjj"] = np.sqrt(np.clip(m2, 0.0, None))
    out["delta_eta"] = np.abs(out["j1_eta"] - out["j2_eta"])
    out["mj1"], out["mj2"] = out["j1_mass"], out["j2_mass"]
    out["delta_m"] = out["mj2"] - out["mj1"]
    out["tau21_j1"], out["tau21_j2"] = out["j1_tau21"], out["j2_tau21"]
    return out


def _find_key(hdf: pd.HDFStore, path: Path, key: str | None) -> str:
    keys = hdf.keys()
    if key is not None:
        k = key if key.startswith("/") else f"/{key}"
        if k not in keys:
            raise ImporterError(f"{path}: no key {key!r} (has: {', '.join(keys) or 'none'})")
        return k
    if len(keys) == 1:
        return keys[0]
    if "/df" in keys:
        return "/df"
    raise ImporterError(
        f"{path}: {'no pandas table' if not keys else 'several pandas tables'} "
        f"(keys: {', '.join(keys) or 'none'}); name one with key=/--key"
    )


def _open_table(path: Path, key: str | None) -> tuple[pd.HDFStore, str, int, list[str]]:
    """Open a pandas HDF5 file, check the columns; returns (store, key, rows, columns)."""
    _common.check_hdf5(path)
    try:
        hdf = pd.HDFStore(path, mode="r")
    except Exception as exc:  # PyTables raises several unrelated types for a broken file
        raise ImporterError(f"{path}: cannot be opened as a pandas HDF5 file ({type(exc).__name__})") from None
    try:
        k = _find_key(hdf, path, key)
        storer = hdf.get_storer(k)
        if getattr(storer, "pandas_type", None) not in ("frame", "frame_table"):
            raise ImporterError(f"{path}: key {k!r} is not a pandas DataFrame")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            columns = [str(c) for c in hdf.select(k, start=0, stop=0).columns]
        missing = [c for c in LHCO_COLUMNS if c not in columns]
        if missing:
            raise ImporterError(
                f"{path}: table {k!r} lacks the LHCO columns {', '.join(missing)} (has: {', '.join(columns)})"
            )
        rows = int(storer.nrows) if storer.is_table else int(storer.shape[0])
    except BaseException:
        hdf.close()
        raise
    return hdf, k, rows, columns


def _chunk_columns(
    feats: dict[str, np.ndarray], start: int, n: int, code: int, truth: np.ndarray
) -> dict[str, np.ndarray]:
    """Every ``DIJET_COLUMNS`` entry for one chunk, in the tuple's order (unknown ones NaN)."""
    known = {
        **feats,
        "run": np.zeros(n), "luminosityBlock": np.zeros(n),
        "event": np.arange(start, start + n), "weight": np.ones(n),
        "dataset": np.full(n, code), "truth_label": truth,
    }
    out = {}
    for name in _store.DIJET_COLUMNS:
        values = known.get(name)
        if values is None:
            out[name] = np.full(n, np.nan, dtype=_FLOAT)
        else:
            out[name] = np.asarray(values).astype(_INT_DTYPES.get(name, _FLOAT))
    # differences of stored columns are taken in float32, as the processor takes them, so the two
    # paths give the same bits (a float64 difference rounded once can differ by one float32 unit)
    out["delta_eta"] = np.abs(out["j1_eta"] - out["j2_eta"])
    out["delta_m"] = out["mj2"] - out["mj1"]
    return out


CUTFLOW = ("all", "two_jets", "delta_eta", "mjj")  # the processor's cut-flow steps


def as_cuts(cuts: DijetCutsConfig | Mapping | None) -> DijetCutsConfig | None:
    """``cuts`` as a :class:`DijetCutsConfig` (a mapping is validated; a bad key or value raises
    :class:`ImporterError`)."""
    if cuts is None or isinstance(cuts, DijetCutsConfig):
        return cuts
    try:
        return DijetCutsConfig(**dict(cuts))
    except (TypeError, ValueError) as exc:
        first = str(exc).splitlines()
        raise ImporterError(f"dijet cuts {dict(cuts)}: {' '.join(first[1:3]) if len(first) > 2 else exc}") from None


def preselection(cols: Mapping[str, np.ndarray], cuts: DijetCutsConfig) -> tuple[np.ndarray, dict[str, int]]:
    """(mask of the rows passing ``cuts``, cut flow) for one chunk of stored (float32) columns.

    The processor's cuts on the two leading jets (see the module docstring): both jets pT > pt_min
    and |η| < eta_max (``two_jets``), then |Δη| < delta_eta_max (``delta_eta``), then
    m_jj > mjj_min (``mjj``).
    """
    two = np.ones(len(cols["mjj"]), bool)
    for i in (1, 2):
        two &= (cols[f"j{i}_pt"] > cuts.pt_min) & (np.abs(cols[f"j{i}_eta"]) < cuts.eta_max)
    deta = two & (cols["delta_eta"] < cuts.delta_eta_max)
    keep = deta & (cols["mjj"] > cuts.mjj_min)
    return keep, {"all": len(keep), "two_jets": int(two.sum()), "delta_eta": int(deta.sum()),
                  "mjj": int(keep.sum())}


def nan_columns() -> list[str]:
    """The ``DIJET_COLUMNS`` an LHCO file cannot fill (stored as NaN)."""
    probe = pd.DataFrame({c: np.ones(1) for c in LHCO_COLUMNS})
    have = set(lhco_features(probe)) | {"run", "luminosityBlock", "event", "weight", "dataset", "truth_label"}
    return [c for c in _store.DIJET_COLUMNS if c not in have]


def import_lhco(
    paths: str | Path | Iterable[str | Path],
    store: str | Path | zarr.Group,
    dataset: str = "data",
    label_as_truth: bool = True,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    key: str | None = None,
    cuts: DijetCutsConfig | Mapping | None = None,
) -> dict:
    """Append LHCO R&D feature files to ``dijet/`` of ``store`` as dataset ``dataset``.

    Parameters
    ----------
    paths : the ``*.features.h5`` files (pandas HDF5, ``table`` or ``fixed`` format).
    store : Zarr store path / URL or an open root group (created if missing).
    dataset : dataset name (``data``, ``extra_bkg``, ``test``, ...).
    label_as_truth : store the file's ``label`` column as ``truth_label`` (else -1).
    chunk_rows : rows read and written per step (peak memory ≈ chunk_rows × 0.3 kB); also the Zarr
        chunk length when the table is created here, so full steps write whole chunks.
    key : the pandas key when a file holds several tables (default: the only one, or ``/df``).
    cuts : apply the processor's dijet preselection (:class:`lhcad.config.DijetCutsConfig` or a
        mapping of its fields; ``None``: import every row). See "Preselection" above.

    Returns a summary ``{"table", "dataset", "rows", "n_rows", "files": [{"path", "key", "sha256",
    "rows", "format", "labelled"[, "stored", "cutflow"]}], "nan_columns"[, "cuts", "cutflow"]}``;
    ``rows`` counts the rows stored (after ``cuts``). Raises :class:`ImporterError` (one line naming
    the file and key) for a file that is not HDF5, has no table, or lacks LHCO columns; on any error
    the table is cut back to its previous rows.
    """
    files = _common.as_paths(paths)
    cuts = as_cuts(cuts)
    if chunk_rows < 1:
        raise ImporterError(f"chunk_rows must be ≥ 1, got {chunk_rows}")
    # Check every file before writing anything.
    infos = []
    for path in files:
        hdf, k, rows, columns = _open_table(path, key)
        hdf.close()
        infos.append({"path": path, "key": k, "rows": rows, "columns": columns})
    root = _common.open_root(store)
    where = f"{root.store}"
    _common.check_appendable(root, "dijet", _store.DIJET_COLUMNS, where)
    for info in infos:
        info["sha256"] = _common.sha256(info["path"])
        _common.check_not_imported(root, "dijet", dataset, info["path"], info["sha256"])
    _common.check_distinct(infos)

    nan_cols = nan_columns()
    log.info("dijet columns not in LHCO files, stored as NaN: %s", ", ".join(nan_cols))
    if cuts is not None and cuts.jet_id:
        log.info("LHCO files carry no jet ID: the jet_id=%d requirement of the cuts is not applied", cuts.jet_id)
    total = sum(i["rows"] for i in infos)
    stored = 0
    flow_all = dict.fromkeys(CUTFLOW, 0)
    summary_files = []
    dtypes = _common.stored_dtypes(root, "dijet")
    with _common.Rollback(root, "dijet"), progress() as bar:
        code = _store.dataset_code(root, "dijet", dataset)
        task = bar.add_task(f"import lhco → dijet/{dataset}", total=total)
        for info in infos:
            path, k = info["path"], info["key"]
            labelled = label_as_truth and LABEL in info["columns"]
            if label_as_truth and not labelled:
                log.warning("%s: no %r column; truth_label = -1", path, LABEL)
            extra = [c for c in info["columns"] if c not in LHCO_COLUMNS and c != LABEL]
            if extra:
                log.info("%s: columns not used by lhcad: %s", path, ", ".join(extra))
            flow = dict.fromkeys(CUTFLOW, 0)
            kept = 0
            with pd.HDFStore(path, mode="r") as hdf:
                fmt = "table" if hdf.get_storer(k).is_table else "fixed"
                for start in range(0, info["rows"], chunk_rows):
                    stop = min(start + chunk_rows, info["rows"])
                    frame = hdf.select(k, start=start, stop=stop)
                    n = len(frame)
                    if n != stop - start:
                        raise ImporterError(f"{path}: key {k!r} gave {n} rows for rows {start}:{stop}")
                    truth = np.full(n, -1, dtype=np.int64)
                    if labelled:
                        label = frame[LABEL].to_numpy(dtype=np.float64)
                        bad = ~np.isfinite(label) | (label < 0) | (label != np.round(label))
                        if bad.any():
                            row = start + int(np.argmax(bad))
                            raise ImporterError(
                                f"{path}: key {k!r} column 'label' row {row} = {float(label[bad][0]):g} "
                                f"(expected 0 = background or a positive integer signal code)"
                            )
                        truth = label.astype(np.int64)
                    cols = _chunk_columns(lhco_features(frame), start, n, code, truth)
                    del frame
                    if cuts is not None:
                        keep, step = preselection(cols, cuts)
                        cols = {name: v[keep] for name, v in cols.items()}
                        for cut in CUTFLOW:
                            flow[cut] += step[cut]
                    if len(cols["mjj"]):
                        _store.append_columns(root, "dijet", _common.conform_columns(cols, dtypes), chunk_rows=chunk_rows)
                    kept += len(cols["mjj"])
                    bar.advance(task, n)
            entry = {"path": str(path.resolve()), "key": k, "sha256": info["sha256"],
                     "rows": info["rows"], "format": fmt, "labelled": bool(labelled)}
            if cuts is not None:
                entry.update(stored=kept, cutflow=flow)
                for cut in CUTFLOW:
                    flow_all[cut] += flow[cut]
            summary_files.append(entry)
            stored += kept
            log.info("%s: %d of %d rows → dijet/ dataset %r", path, kept, info["rows"], dataset)
        record = {"format": "lhco", "table": "dijet", "dataset": dataset,
                  "label_as_truth": bool(label_as_truth), "files": summary_files,
                  "synthesised": {"run": 0, "luminosityBlock": 0, "event": "row index in the file"},
                  "nan_columns": nan_cols}
        if cuts is not None:
            record.update(cuts=cuts.model_dump(), cutflow=flow_all)
            grp = root["dijet"] if "dijet" in root else None
            if grp is not None:
                cutflow = dict(grp.attrs.get("cutflow", {}))
                prev = cutflow.get(dataset, {})
                cutflow[dataset] = {cut: int(prev.get(cut, 0)) + flow_all[cut] for cut in CUTFLOW}
                grp.attrs["cutflow"] = cutflow
        _common.record_import(root, record)
    out = {"table": "dijet", "dataset": dataset, "rows": stored,
           "n_rows": _store.n_rows(root, "dijet"), "files": summary_files, "nan_columns": nan_cols}
    if cuts is not None:
        out.update(cuts=cuts.model_dump(), cutflow=flow_all)
    return out
