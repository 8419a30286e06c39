"""Consolidation: committed chunk parts → the contiguous tables of the store contract.

Row tables (dijet, l1): the driver reads only the part headers, places the parts in fileset order
(so the result is the same whatever executor, chunk timing or retries produced them) and creates the
empty columns; :func:`write_rows` tasks, one per Zarr chunk of rows, then fill disjoint chunks from
the parts in parallel on the run's workers (``mapper``). Nobody holds all events at once.
Per-LS histograms are summed on the driver over the chunks that share a (run, LS); they are small
(LS × bins).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from lhcad import store as _store
from lhcad.log import progress_map

from . import parts as _parts

log = logging.getLogger("lhcad.processors")


def _sum_cutflows(entries: Sequence[Mapping]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for e in entries:
        flow = out.setdefault(e["dataset"], {})
        for cut, n in (e.get("cutflow") or {}).items():
            flow[cut] = flow.get(cut, 0) + int(n)
    return out


ROW_CHUNK = 262_144  # rows per Zarr chunk of the row tables (as lhcad.store.TableWriter)
# A consolidation task is one Zarr chunk of rows x a group of columns; the columns are split into
# as many groups as it takes for about TASKS_PER_WORKER similar tasks per worker (whole row chunks
# alone gave 6 tasks for 1.33 M dijet rows: 3 + 2.07 chunks on 2 workers), and no more: every task
# costs scheduling, a Zarr call and part opens (a lone worker got 30 tasks for 1.33 M rows).
TASKS_PER_WORKER = 4
TASK_ROW_BYTES = 32  # column_groups' default group width (bytes per row)


def column_groups(arrays: Mapping[str, dict], row_bytes: int = TASK_ROW_BYTES) -> list[list[str]]:
    """Consecutive columns grouped to about ``row_bytes`` per row (a wider column is its own group).

    A column that is a copy of another (``"same_as"``) joins its source's group at no cost.
    """
    groups: list[list[str]] = []
    where: dict[str, int] = {}
    size = 0
    for name, spec in arrays.items():
        if spec.get("same_as") in where:
            groups[where[spec["same_as"]]].append(name)
            continue
        width = np.dtype(spec["dtype"]).itemsize * int(np.prod(spec["shape"], dtype=np.int64))
        if not groups or size + width > row_bytes:
            groups.append([])
            size = 0
        groups[-1].append(name)
        where[name] = len(groups) - 1
        size += width
    return groups


def plan_rows(parts_root: str, entries: Sequence[Mapping], codes: Mapping[str, int],
              chunk_rows: int = ROW_CHUNK, workers: int = 2) -> tuple[int, dict[str, dict], list[tuple]]:
    """Row layout of a table from its committed parts, in ``entries`` order.

    Returns ``(n_rows, arrays, tasks)``: ``arrays`` maps column name to dtype and per-row shape (in
    the parts' column order, then ``dataset``) and, for a column every part stores as a copy of an
    earlier one (dijet: ``mj1`` is ``j1_mass``), ``"same_as"``: that column; each task ``(lo, hi, pieces, names)`` covers whole
    Zarr chunks ``[lo, hi)`` of the columns ``names`` and lists the part slices ``(key, start, stop,
    dataset code)`` that fill it, so that tasks write disjoint Zarr chunks and can run in parallel;
    about :data:`TASKS_PER_WORKER` tasks per worker (``workers``) where the columns allow.
    """
    done = [e for e in entries if e["status"] == "done"]
    arrays: dict[str, dict] = {}
    same: dict[str, str | None] = {}  # column -> the column it copies in every part so far
    pieces = []  # (global start, key, rows, code)
    pos = 0
    for e in done:
        layout = _parts.part_layout(parts_root, e["key"])
        rows = {int(spec["shape"][0]) for spec in layout.values()}
        if rows and rows != {int(e["events_out"])}:
            raise RuntimeError(f"part {e['key']}: {sorted(rows)} rows, manifest says {e['events_out']}")
        stored: dict[tuple, str] = {}
        for name, spec in layout.items():
            arrays.setdefault(name, {"dtype": spec["dtype"], "shape": spec["shape"][1:]})
            where = (spec["offset"], spec["dtype"], tuple(spec["shape"]))
            source = stored.setdefault(where, name)
            copy_of = source if source != name else None
            same[name] = copy_of if same.get(name, copy_of) == copy_of else None
        pieces.append((pos, e["key"], int(e["events_out"]), codes[e["dataset"]]))
        pos += int(e["events_out"])
    for name, source in same.items():
        if source is not None and name in arrays:
            arrays[name]["same_as"] = source
    if done:
        arrays["dataset"] = {"dtype": np.dtype(np.int32).str, "shape": []}
    n_rows = pos
    n_chunks = max(1, -(-n_rows // chunk_rows))
    widths = [np.dtype(a["dtype"]).itemsize * int(np.prod(a["shape"], dtype=np.int64))
              for a in arrays.values() if "same_as" not in a]
    n_groups = -(-TASKS_PER_WORKER * max(1, int(workers)) // n_chunks)
    groups = column_groups(arrays, max(max(widths, default=1), -(-sum(widths) // n_groups)))
    tasks = []
    for lo in range(0, n_rows, chunk_rows):
        hi = min(n_rows, lo + chunk_rows)
        sl = [(key, max(lo, start) - start, min(hi, start + rows) - start, code)
              for start, key, rows, code in pieces if start < hi and start + rows > lo and rows]
        tasks.extend((lo, hi, sl, names) for names in groups)
    return n_rows, arrays, tasks


def write_rows(job: tuple) -> int:
    """One consolidation task (runs on a worker): rows ``[lo, hi)`` of some columns from the parts.

    ``arrays`` are those columns' (pickled) ``zarr.Array`` objects, so a task reads no Zarr
    metadata; each part slice is read straight into the chunk buffer and every column's chunk is
    written in one concurrent Zarr call. A column in ``same`` (name -> source column of this task)
    is its source's buffer: read and encoded once, written under both names.
    """
    parts_root, arrays, (lo, hi, pieces), same = job
    out = {n: np.empty((hi - lo, *a.shape[1:]), a.dtype) for n, a in arrays.items() if n not in same}
    names = [n for n in out if n != "dataset"]
    dest = 0
    for key, start, stop, code in pieces:
        rows = stop - start
        if names:
            _parts.read_part_into(parts_root, key, {n: out[n][dest:dest + rows] for n in names}, start)
        if "dataset" in out:
            out["dataset"][dest:dest + rows] = code
        dest += rows
    if dest != hi - lo:
        raise RuntimeError(f"rows {lo}-{hi}: parts give {dest} rows")
    out.update({n: out[source] for n, source in same.items()})
    _set_rows([(arrays[n].async_array, out[n]) for n in arrays], lo, hi)
    return hi - lo


def _set_rows(targets: Sequence[tuple], lo: int, hi: int) -> None:
    """``array[lo:hi] = values`` for every (async array, values) pair, in one concurrent Zarr call.

    ``[lo, hi)`` are whole Zarr chunks (the last one may end at the array's end). Chunks of arrays
    stored with the row tables' codec chain (:func:`lhcad.store.column_array_options`) are encoded
    by :func:`_encode_chunks` in this thread; only their writes go through the array's store.
    """
    import asyncio

    from zarr.core.sync import sync

    writes, rest = [], []
    encoded: dict[tuple, Any] = {}  # the same values under two names are encoded once
    for arr, values in targets:
        chunks = _encode_chunks(arr, values, lo, hi, encoded)
        if chunks is None:
            rest.append((arr, values))
        else:
            writes.extend(chunks)

    async def write_all():
        await asyncio.gather(*(path.set(data) for path, data in writes),
                             *(a.setitem(slice(lo, hi), v) for a, v in rest))

    sync(write_all())


def _encode_chunks(arr, values: np.ndarray, lo: int, hi: int, encoded: dict | None = None) -> list[tuple] | None:
    """The (store path, encoded bytes) of the whole chunks ``arr[lo:hi] = values``; None: use zarr.

    Work-around (zarr 3.1 performance): zarr's codec pipeline hands every chunk to a thread for the
    Blosc encode and to another for the write; for the ~200 chunks of a 1.33 M-row dijet table that
    thread traffic cost about as much as the compression itself (consolidation CPU, min of 12
    interleaved runs: 0.69 s through ``setitem``, 0.46 s encoding here; the stored arrays read back
    identical). Only the exact chain the row tables use is encoded here — little-endian bytes +
    Blosc, regular chunks aligned with ``lo``, default chunk keys — with numcodecs' Blosc (what
    zarr's ``BloscCodec`` runs) and the array's own fill value for the padding of an edge chunk.
    ``encoded`` caches the bytes by (values object, chunk, codec) for columns that are copies.
    """
    import sys

    import numcodecs
    from zarr.codecs import BloscCodec, BytesCodec
    from zarr.core.buffer import default_buffer_prototype

    md = arr.metadata
    codecs = getattr(md, "codecs", ())
    if (getattr(md, "zarr_format", 2) != 3 or len(codecs) != 2 or not isinstance(codecs[0], BytesCodec)
            or not isinstance(codecs[1], BloscCodec) or sys.byteorder != "little"
            or np.dtype(values.dtype) != np.dtype(arr.dtype) or values.dtype.byteorder == ">"):
        return None
    rows = md.chunk_grid.chunk_shape[0]
    if lo % rows or tuple(md.chunk_grid.chunk_shape[1:]) != tuple(arr.shape[1:]) or len(values) != hi - lo:
        return None
    blosc = codecs[1]
    codec = numcodecs.Blosc(cname=blosc.cname.value, clevel=blosc.clevel, blocksize=blosc.blocksize,
                            shuffle={"noshuffle": 0, "shuffle": 1, "bitshuffle": 2}[blosc.shuffle.value])
    proto = default_buffer_prototype()
    out = []
    for start in range(lo, hi, rows):
        chunk = values[start - lo:start - lo + rows]
        if len(chunk) < rows:  # edge chunk: stored at full size, padded with the fill value
            full = np.full((rows, *chunk.shape[1:]), md.fill_value, chunk.dtype)
            full[:len(chunk)] = chunk
            chunk = full
        key = md.encode_chunk_key((start // rows, *(0,) * (chunk.ndim - 1)))
        which = (id(values), start, repr(codec), md.fill_value)
        if encoded is None or which not in encoded:
            data = proto.buffer.from_bytes(codec.encode(np.ascontiguousarray(chunk)))
            if encoded is None:
                out.append((arr.store_path / key, data))
                continue
            encoded[which] = data
        out.append((arr.store_path / key, encoded[which]))
    return out


def _create_arrays(zstore, table: str, n_rows: int, arrays: Mapping[str, dict]) -> dict:
    """The empty columns of ``table`` (metadata only), created concurrently: ``{name: zarr.Array}``.

    Codec and write options are the store's (:func:`lhcad.store.column_array_options`). The array
    metadata is built once per (dtype, row shape) in memory and all columns are written in one
    ``zarr.create_hierarchy`` call (the table group exists and is empty): 2-3x less driver time
    than one ``create_array`` per column, which checks and writes the parent groups each time
    (measured for the 34 dijet columns: 0.065 s instead of 0.13-0.19 s, serial between the chunk
    tasks and the consolidation tasks).
    """
    import zarr
    from zarr.storage import MemoryStore

    options = _store.column_array_options()
    config = options.pop("config")
    chunk_rows = max(1, min(ROW_CHUNK, n_rows))
    scratch = MemoryStore()
    metadata: dict[tuple, Any] = {}
    nodes = {}
    for name, spec in arrays.items():
        kind = (np.dtype(spec["dtype"]).str, tuple(spec["shape"]))
        if kind not in metadata:
            metadata[kind] = zarr.create_array(scratch, name=f"a{len(metadata)}", shape=(n_rows, *kind[1]),
                                               dtype=np.dtype(kind[0]), chunks=(chunk_rows, *kind[1]),
                                               **options).metadata
        nodes[f"{table}/{name}"] = metadata[kind]
    created = dict(zarr.create_hierarchy(store=zstore, nodes=nodes))
    return {name: created[f"{table}/{name}"].with_config(config) for name in arrays}


def _write_rows(root, store: str, table: str, parts_root: str, entries: Sequence[Mapping],
                codes: dict[str, int], mapper: Callable, workers: int = 2) -> int:
    n_rows, arrays, tasks = plan_rows(parts_root, entries, codes, workers=workers)
    if not arrays:
        return 0
    root.require_group(table)
    zarrays = _create_arrays(root.store, table, n_rows, arrays)
    mapper(write_rows, [(parts_root, {n: zarrays[n] for n in names}, (lo, hi, pieces),
                         {n: arrays[n]["same_as"] for n in names if arrays[n].get("same_as") in names})
                        for lo, hi, pieces, names in tasks], f"consolidate {table}")
    # (re-open: a zarr Group object caches its attributes; writing through a stale one loses keys)
    _store.open_store(store, mode="a")[table].attrs.update({"columns": list(arrays), "n_rows": n_rows})
    return n_rows


def _write_lumi(root, parts_root: str, entries: Sequence[Mapping], proc) -> int:
    done = [e for e in entries if e["status"] == "done"]
    mes = list(proc.monitor_elements)
    runs, lumis = [], []
    for e in done:
        p = _parts.read_part(parts_root, e["key"], ["run", "lumi"])
        runs.append(p["run"])
        lumis.append(p["lumi"])
    run = np.concatenate(runs) if runs else np.zeros(0, np.int64)
    lumi = np.concatenate(lumis) if lumis else np.zeros(0, np.int64)
    pairs, inverse = np.unique(np.stack([run, lumi], axis=1), axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    grp = root.require_group("lumi")
    for me in mes:
        nbins = proc.n_bins(me)
        values = np.zeros((len(pairs), nbins))
        variances = np.zeros((len(pairs), nbins))
        start = 0
        for e in done:
            p = _parts.read_part(parts_root, e["key"], [f"{me}__values", f"{me}__variances"])
            k = len(p[f"{me}__values"])
            np.add.at(values, inverse[start:start + k], p[f"{me}__values"])
            np.add.at(variances, inverse[start:start + k], p[f"{me}__variances"])
            start += k
        g = grp.require_group(me)
        _store.write_hist(g, values, variances, proc.axes_uhi(me))
        g.create_array("run", data=pairs[:, 0].astype(np.int64), overwrite=True)
        g.create_array("lumi", data=pairs[:, 1].astype(np.int64), overwrite=True)
        g.attrs["flow"] = False
    grp.attrs.update({"monitor_elements": mes, "n_ls": len(pairs)})
    return len(pairs)


def consolidate(
    table: str,
    store: str,
    parts_root: str,
    entries: Sequence[Mapping],
    *,
    datasets: Sequence[str],
    options: Mapping[str, Any],
    proc,
    skipped_files: Sequence[Mapping],
    fileset: Mapping,
    chunksize: int,
    treename: str,
    mapper: Callable = progress_map,
    workers: int = 1,
) -> dict[str, Any]:
    """Rebuild ``table`` in ``store`` from the parts listed in ``entries``; returns the run summary."""
    root = _store.open_store(store, mode="a")
    _store.delete_table(root, table)
    root.require_group(table)
    codes = {ds: _store.dataset_code(root, table, ds) for ds in datasets}
    if table == "lumi":
        n_out = _write_lumi(root, parts_root, entries, proc)
    else:
        n_out = _write_rows(root, store, table, parts_root, entries, codes, mapper, workers)
    # (re-open: a zarr Group object caches its attributes; writing through a stale one loses keys)
    grp = _store.open_store(store, mode="a")[table]
    if table != "lumi" and "n_rows" not in grp.attrs:
        grp.attrs.update({"n_rows": 0, "columns": []})
    cutflow = _sum_cutflows(entries)
    if cutflow and any(cutflow.values()):
        grp.attrs["cutflow"] = cutflow

    done = [e for e in entries if e["status"] == "done"]
    skipped_chunks = [e for e in entries if e["status"] != "done"]
    missing = sorted({b for e in done for b in e.get("missing", [])})
    events_processed = sum(e["events_in"] for e in done)
    events_skipped = sum(e["events_in"] for e in skipped_chunks) + sum(f["events"] for f in skipped_files)
    summary = {
        "table": table,
        "store": str(store),
        "events_in_readable": events_processed + events_skipped,
        "events_processed": events_processed,
        "events_skipped": events_skipped,
        "events_out": int(sum(e["events_out"] for e in done)),
        "rows": int(n_out),
        "missing_branches": missing,
        "cutflow": cutflow,
        "skipped": [
            *({"dataset": e["dataset"], "file": e["file"], "entrystart": e["entrystart"],
               "entrystop": e["entrystop"], "events": e["events_in"], "reason": e["reason"]} for e in skipped_chunks),
            *({"dataset": f["dataset"], "file": f["file"], "events": f["events"], "reason": f["reason"]}
              for f in skipped_files),
        ],
    }
    manifest = [dict(e) for e in entries] + [
        {"key": "", "dataset": f["dataset"], "file": f["file"], "uuid": "", "entrystart": 0,
         "entrystop": f["events"], "events_in": f["events"], "events_out": 0,
         "status": "skipped" if f["readable"] is False or f["events"] else "empty", "reason": f["reason"]}
        for f in skipped_files
    ]
    _store.write_manifest(root, table, manifest, {k: v for k, v in summary.items() if k != "skipped"})
    inputs: dict[str, dict] = {}
    for e in entries:
        rec = inputs.setdefault(e["file"], {"file": e["file"], "dataset": e["dataset"], "uuid": e["uuid"],
                                            "entry_ranges": []})
        rec["entry_ranges"].append([e["entrystart"], e["entrystop"]])
    prov = dict(root.attrs.get("provenance", {}).get("process", {}))
    prov[table] = {
        "processor": type(proc).__name__,
        "options": dict(options),
        "chunksize": chunksize,
        "treename": treename,
        "datasets": list(datasets),
        "inputs": list(inputs.values()),
        "skipped_files": [f["file"] for f in skipped_files],
    }
    import datetime as _dt

    prov[table]["created"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    _store.set_provenance(root, process=prov)
    log.info("%s: %d rows from %d events (%d chunks, %d skipped)", table, n_out, events_processed,
             len(done), len(skipped_chunks) + len(skipped_files))
    return summary
