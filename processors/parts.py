"""Chunk parts: what a worker commits for one coffea chunk before consolidation.

A part is one file ``<parts root>/<chunk key>.part``: a small JSON header (the chunk's manifest entry
and, per array, dtype / shape / byte offset) followed by the raw array bytes, uncompressed and
64-byte aligned; an array passed under two names is stored once. Writing it costs one sequential
write (no zip container, no CRC, no compression); reading a column's row slice back is one ranged
read straight into the destination array (``seek`` + ``readinto``, through fsspec for local paths and URLs).

It is written under a temporary name and renamed, so a part exists completely or not at all; nothing
is shared between writers. A retried or duplicated chunk finds the committed part and discards its
own copy (chunks are deterministic, so both are identical).

>>> write_part("/tmp/s.zarr/_parts/t", "k", {"x": np.arange(3)}, {"key": "k"})   # doctest: +SKIP
True
"""

from __future__ import annotations

import json
import struct
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

SUFFIX = ".part"
_MAGIC = b"LHCADPART1\n"
_ALIGN = 64


def _fs(url: str):
    import fsspec

    return fsspec.core.url_to_fs(url)


def write_part(parts_root: str, key: str, arrays: Mapping[str, np.ndarray], entry: Mapping[str, Any]) -> bool:
    """Atomically commit one chunk's ``arrays`` and manifest ``entry``; False if already committed."""
    fs, root = _fs(parts_root)
    final = f"{root.rstrip('/')}/{key}{SUFFIX}"
    if fs.exists(final):
        return False
    fs.makedirs(root, exist_ok=True)
    layout, pos, seen, data = {}, 0, {}, {}
    for name, a in arrays.items():
        if id(a) in seen:  # the same array under two names (dijet: mj1 is j1_mass): stored once
            layout[name] = dict(layout[seen[id(a)]])
            continue
        seen[id(a)] = name
        data[name] = np.ascontiguousarray(a)
        layout[name] = {"dtype": data[name].dtype.str, "shape": list(data[name].shape), "offset": pos}
        pos += -(-data[name].nbytes // _ALIGN) * _ALIGN
    header = json.dumps({"entry": dict(entry), "arrays": layout}).encode()
    start = -(-(len(_MAGIC) + 8 + len(header)) // _ALIGN) * _ALIGN
    tmp = f"{final}.tmp-{uuid.uuid4().hex[:12]}"
    with fs.open(tmp, "wb") as fh:
        fh.write(_MAGIC + struct.pack("<Q", start) + header)
        fh.write(b"\0" * (start - len(_MAGIC) - 8 - len(header)))
        written = 0
        for name, a in data.items():
            fh.write(b"\0" * (layout[name]["offset"] - written))
            fh.write(memoryview(a).cast("B") if a.nbytes else b"")
            written = layout[name]["offset"] + a.nbytes
    if fs.exists(final):  # another attempt committed meanwhile
        fs.rm(tmp)
        return False
    fs.mv(tmp, final)
    return True


def _read_header(fh) -> tuple[int, dict]:
    head = fh.read(len(_MAGIC) + 8)
    if not head.startswith(_MAGIC):
        raise ValueError("not an lhcad part")
    (start,) = struct.unpack("<Q", head[len(_MAGIC):])
    text = fh.read(start - len(head)).rstrip(b"\0")
    return start, json.loads(text)


def part_entries(parts_root: str) -> dict[str, dict]:
    """Manifest entries of every committed part under ``parts_root`` (key -> entry)."""
    fs, root = _fs(parts_root)
    if not fs.exists(root):
        return {}
    out = {}
    for path in fs.ls(root, detail=False):
        name = path.rstrip("/").rsplit("/", 1)[-1]
        if not name.endswith(SUFFIX):
            continue  # temporary files of unfinished writes
        with fs.open(path, "rb") as fh:
            out[name[: -len(SUFFIX)]] = _read_header(fh)[1]["entry"]
    return out


def part_layout(parts_root: str, key: str) -> dict[str, dict]:
    """``{name: {"dtype", "shape", "offset"}}`` of the arrays of part ``key`` (in write order)."""
    fs, root = _fs(parts_root)
    with fs.open(f"{root.rstrip('/')}/{key}{SUFFIX}", "rb") as fh:
        return _read_header(fh)[1]["arrays"]


def read_part(parts_root: str, key: str, names: Sequence[str] | None = None,
              rows: slice = slice(None)) -> dict[str, np.ndarray]:
    """Arrays of the committed part ``key`` (all, or ``names``), optionally only ``rows`` of each."""
    layout = part_layout(parts_root, key)
    by_start: dict[int, dict[str, np.ndarray]] = {}     # arrays of different lengths start differently
    out = {}
    for name in (list(layout) if names is None else list(names)):
        spec = layout[name]
        lo, hi, _ = rows.indices(spec["shape"][0])
        out[name] = np.empty((max(lo, hi) - lo, *spec["shape"][1:]), np.dtype(spec["dtype"]))
        by_start.setdefault(lo, {})[name] = out[name]
    for lo, group in by_start.items():
        read_part_into(parts_root, key, group, lo)
    return out


def read_part_into(parts_root: str, key: str, out: Mapping[str, np.ndarray], start: int = 0) -> None:
    """Fill each ``out[name]`` with rows ``start : start + len(out[name])`` of the part's array.

    The bytes are read straight into the destination (one ``readinto`` per column, no intermediate
    array) when its dtype matches the part's and it is contiguous; otherwise read and cast.
    """
    fs, root = _fs(parts_root)
    path = f"{root.rstrip('/')}/{key}{SUFFIX}"
    with fs.open(path, "rb") as fh:
        head, header = _read_header(fh)
        for name, dst in out.items():
            spec = header["arrays"][name]
            dtype, shape = np.dtype(spec["dtype"]), tuple(spec["shape"])
            rows = len(dst)
            if start + rows > shape[0]:
                raise ValueError(f"part {key}: {name} has {shape[0]} rows, asked for {start}-{start + rows}")
            row_bytes = dtype.itemsize * int(np.prod(shape[1:], dtype=np.int64))
            fh.seek(head + spec["offset"] + start * row_bytes)
            if dst.dtype == dtype and dst.flags.c_contiguous and dst.shape[1:] == shape[1:]:
                view = memoryview(dst).cast("B") if dst.nbytes else memoryview(b"")
                got = fh.readinto(view) if dst.nbytes else 0
                if got != dst.nbytes:
                    raise ValueError(f"part {key}: {name} truncated ({got} of {dst.nbytes} bytes)")
            else:
                buf = fh.read(rows * row_bytes)
                dst[...] = np.frombuffer(buf, dtype=dtype).reshape((rows, *shape[1:]))
