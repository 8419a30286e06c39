"""Pieces shared by the importers: the error type, file checks, checksums, dtypes, rollback, provenance."""

from __future__ import annotations

import datetime as _dt
import hashlib
import logging
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import h5py
import numpy as np
import zarr

from lhcad import store as _store
from lhcad.config import ConfigError

log = logging.getLogger(__name__)


class ImporterError(ConfigError):
    """An input file that cannot be imported; the one-line message names the file and the key.

    A :class:`lhcad.config.ConfigError`, so ``lhcad.cli.main`` turns it into exit code 2.
    """


def as_paths(paths: str | Path | Iterable[str | Path]) -> list[Path]:
    """One path or many, as a non-empty list of :class:`Path`."""
    if isinstance(paths, (str, Path)):
        paths = [paths]
    out = [Path(p) for p in paths]
    if not out:
        raise ImporterError("no input files given")
    return out


def check_hdf5(path: Path) -> None:
    """Raise :class:`ImporterError` unless ``path`` is a readable HDF5 file."""
    if not path.is_file():
        raise ImporterError(f"{path}: no such file")
    try:
        ok = h5py.is_hdf5(path)
    except OSError as exc:  # unreadable (permissions, ...)
        raise ImporterError(f"{path}: cannot be read ({exc})") from None
    if not ok:
        raise ImporterError(f"{path}: not an HDF5 file (no HDF5 signature)")


def sha256(path: Path, block: int = 1 << 20) -> str:
    """SHA-256 of a file, read in 1 MiB blocks (constant memory)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(block):
            h.update(chunk)
    return h.hexdigest()


def open_root(store: str | Path | zarr.Group) -> zarr.Group:
    """The root group of a store given as a path / URL or already open."""
    if isinstance(store, zarr.Group):
        return store
    return _store.open_store(str(store), mode="a")


def conform(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Cast ``values`` to the dtype ``name`` already has in the store.

    NaN cannot live in an integer column: there it becomes -1 (signed) or the type's maximum
    (unsigned), the "unknown" marker of integer columns.
    """
    values = np.asarray(values)
    dtype = np.dtype(dtype)
    if values.dtype == dtype:
        return values
    if dtype.kind in "iu" and values.dtype.kind == "f":
        bad = ~np.isfinite(values)
        if bad.any():
            fill = -1 if dtype.kind == "i" else np.iinfo(dtype).max
            values = np.where(bad, fill, values)
    return values.astype(dtype)


def stored_dtypes(root: zarr.Group, table: str) -> dict[str, np.dtype]:
    """dtype of every array already in ``table`` (empty when the table does not exist yet)."""
    grp = root.get(table)
    if grp is None:
        return {}
    return {name: grp[name].dtype for name in grp.array_keys()}


def conform_columns(columns: Mapping[str, np.ndarray], dtypes: Mapping[str, np.dtype]) -> dict[str, np.ndarray]:
    """Cast every column to its stored dtype (see :func:`stored_dtypes`); new columns unchanged."""
    return {name: conform(v, dtypes[name]) if name in dtypes else v for name, v in columns.items()}


def check_appendable(root: zarr.Group, table: str, columns: Sequence[str], where: str) -> None:
    """Refuse to append where the rows would no longer line up with stored results or columns."""
    grp = root.get(table)
    if grp is None:
        return
    if "scores" in grp and len(list(grp["scores"].array_keys())) + len(list(grp["scores"].group_keys())):
        raise ImporterError(
            f"{where}: {table}/scores already exists; importing more rows would misalign the scores "
            f"(import into a fresh store, or before scoring)"
        )
    existing = list(grp.attrs.get("columns", []))
    if existing and set(existing) != set(columns):
        missing = sorted(set(columns) - set(existing))
        extra = sorted(set(existing) - set(columns))
        raise ImporterError(
            f"{where}: {table}/ holds a different column set (store lacks {missing}, has extra {extra}); "
            f"import into a fresh store"
        )


def check_not_imported(root: zarr.Group, table: str, dataset: str, path: Path, digest: str) -> None:
    """Refuse to import the same file (by checksum) twice into the same table and dataset."""
    for rec in root.attrs.get("provenance", {}).get("imports", []):
        if rec.get("table") == table and rec.get("dataset") == dataset:
            for f in rec.get("files", []):
                if f.get("sha256") == digest:
                    raise ImporterError(
                        f"{path}: already imported into {table}/ dataset {dataset!r} "
                        f"(sha256 {digest[:12]}…, from {f.get('path')}); rows would be duplicated"
                    )


def check_distinct(infos: Sequence[Mapping]) -> None:
    """Refuse the same file (by checksum) given twice in one import."""
    seen: dict[str, Path] = {}
    for info in infos:
        if info["sha256"] in seen:
            raise ImporterError(f"{info['path']}: same contents as {seen[info['sha256']]} (given twice)")
        seen[info["sha256"]] = info["path"]


class Rollback:
    """Context manager: on an exception, cut ``table`` back to the rows it had on entry.

    An import that fails half-way (a bad chunk in the third file) leaves the store as it was,
    not with a partial dataset.
    """

    def __init__(self, root: zarr.Group, table: str):
        self.root, self.table = root, table

    def __enter__(self) -> Rollback:
        grp = self.root.get(self.table)
        self.existed = grp is not None
        self.attrs = dict(grp.attrs) if grp is not None else {}
        self.n = int(self.attrs.get("n_rows", 0))
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is None:
            return False
        if not self.existed:
            if self.table in self.root:
                del self.root[self.table]
            return False
        grp = self.root[self.table]
        for name in list(grp.array_keys()):
            arr = grp[name]
            if arr.shape and arr.shape[0] != self.n:
                arr.resize((self.n, *arr.shape[1:]))
        grp.attrs.clear()
        grp.attrs.update(self.attrs)
        log.warning("import failed: %s/ cut back to its %d previous rows", self.table, self.n)
        return False


def record_import(root: zarr.Group, record: dict) -> dict:
    """Append one import record to ``provenance["imports"]`` (via :func:`lhcad.store.set_provenance`)."""
    imports = list(root.attrs.get("provenance", {}).get("imports", []))
    record = {**record, "time": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
    imports.append(record)
    return _store.set_provenance(root, imports=imports)
