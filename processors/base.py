"""What every lhcad processor shares: branch access, chunk identity, and writing the chunk's part.

A :class:`StoreProcessor` is a plain ``coffea.processor.ProcessorABC``. Its :meth:`compute` turns one
chunk of NanoEvents into numpy arrays; :meth:`process` (run by coffea on a worker) writes them as an
atomic *part* of the Zarr store (:func:`lhcad.processors.parts.write_part`) and returns only a small accumulator
(manifest entry, cut flow, missing optional branches) — the driver never holds the events.
"""

from __future__ import annotations

import hashlib
import re
import warnings
from abc import abstractmethod
from typing import Any

import awkward as ak
import numpy as np
from coffea import processor

from lhcad.cluster import tune_malloc

from . import parts as _parts

# NanoAODSchema warns about cross-references of collections a skim (or the generator) does not
# write; harmless here. Installed on import, i.e. also on every worker that unpickles a processor.
warnings.filterwarnings("ignore", message="Missing cross-reference index", category=RuntimeWarning)
warnings.filterwarnings("ignore", message="Branch .* already exists but its values will be replaced",
                        category=RuntimeWarning)


class InputError(ValueError):
    """A bad input file (missing required branch, unreadable baskets ...); the message names it."""


def raw_events(events) -> ak.Array:
    """The NanoEvents record without coffea behaviours (still lazy / virtual).

    Work-around: coffea's ``VertexArray`` validation requires ``PV_x/y/z``, which the lhcad branch
    contract (and some skims) do not have, so ``events.PV`` raises; plain awkward records also avoid
    the ``FatJet.tau2`` vector-property trap (coffea #1506) and behaviour overhead.
    """
    return ak.Array(events.layout)


def has_branch(ev: ak.Array, name: str) -> bool:
    """Whether NanoAOD branch ``name`` (``"FatJet_tau2"``, ``"PV_npvs"``, ``"run"``) is in ``ev``."""
    coll, _, field = name.partition("_")
    if coll in ev.fields:
        return not field or field in ev[coll].fields
    return name in ev.fields


def branch(ev: ak.Array, name: str) -> ak.Array:
    """The (possibly jagged) array of NanoAOD branch ``name`` (``"nJet"`` gives the jet count)."""
    if name.startswith("n") and name[1:] in ev.fields and name not in ev.fields:
        return ak.num(ev[name[1:]], axis=1)
    coll, _, field = name.partition("_")
    if coll in ev.fields and field:
        return ev[coll][field]
    return ev[name]


def chunk_key(meta: dict) -> str:
    """A file-system-safe, unique name of one chunk: dataset, file UUID, path hash and entry range.

    The path hash matters: copies of a file (replicas, or a damaged copy) share the ROOT UUID.
    """
    ds = re.sub(r"[^A-Za-z0-9_.-]", "_", str(meta["dataset"]))
    uid = meta.get("fileuuid") or "nouuid"
    path = hashlib.sha1(str(meta["filename"]).encode()).hexdigest()[:10]
    return f"{ds}--{uid}--{path}--{int(meta['entrystart'])}-{int(meta['entrystop'])}"


def one_line(text: str) -> str:
    """Exception texts (uproot's span lines) as one line for error messages and the manifest."""
    return " ".join(str(text).split())


class StoreProcessor(processor.ProcessorABC):
    """Base class: subclasses set :attr:`table` and implement :meth:`compute`.

    Parameters
    ----------
    parts_root : str or None
        Where parts go (``<store>/_parts/<run id>``); set by :func:`lhcad.processors.runner.process`.
        With None, :meth:`process` returns the arrays in the accumulator instead (small inputs only).
    skipbadfiles : bool
        A chunk that cannot be read (truncated baskets, missing required branch) is recorded as
        ``status="skipped"`` with the reason instead of failing the run.
    """

    table = ""
    required: tuple[str, ...] = ()

    def __init__(self, parts_root: str | None = None, skipbadfiles: bool = False):
        self.parts_root = parts_root
        self.skipbadfiles = skipbadfiles

    # -- subclasses ------------------------------------------------------------------------------
    def bulk_branches(self) -> tuple[str, ...]:
        """Branches this processor reads from every chunk, read together in one uproot call.

        Passed as coffea's fileset-level ``preload``: NanoEvents then reads them with one
        ``TTree.arrays`` per chunk (as a plain uproot read does) instead of one request per branch
        on first access. Only branches that are always used belong here (absent ones are skipped);
        the default, none, keeps every read lazy.
        """
        return ()

    @abstractmethod
    def compute(self, ev: ak.Array, meta: dict) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Arrays of this chunk and extra manifest content (``cutflow``, ``events_out``, ``n_ls``)."""

    # -- coffea ----------------------------------------------------------------------------------
    def check_required(self, ev: ak.Array, meta: dict) -> None:
        missing = [b for b in self.required if not has_branch(ev, b)]
        if missing:
            raise InputError(
                f"{meta['filename']}: tree {meta.get('treename', 'Events')!r} lacks required "
                f"branch{'es' if len(missing) > 1 else ''} {', '.join(missing)}"
            )

    def process(self, events):
        tune_malloc()
        meta = dict(events.metadata)
        key = chunk_key(meta)
        entry = {
            "key": key,
            "dataset": meta["dataset"],
            "file": meta["filename"],
            "uuid": meta.get("fileuuid", ""),
            "treename": meta.get("treename", "Events"),
            "entrystart": int(meta["entrystart"]),
            "entrystop": int(meta["entrystop"]),
            "events_in": int(meta["entrystop"]) - int(meta["entrystart"]),
            "events_out": 0,
            "status": "done",
            "reason": "",
        }
        self.missing: set[str] = set()
        try:
            ev = raw_events(events)
            self.check_required(ev, meta)
            arrays, extra = self.compute(ev, meta)
        except Exception as exc:  # noqa: BLE001 - recorded (skipbadfiles) or re-raised naming the file
            reason = one_line(exc if isinstance(exc, InputError) else f"{meta['filename']}: {type(exc).__name__}: {exc}")
            if not self.skipbadfiles:
                raise InputError(reason) from exc
            entry.update(status="skipped", reason=reason)
            arrays, extra = {}, {}
        if entry["status"] == "done" and entry["events_in"] == 0:
            entry.update(status="empty", reason=f"{meta['filename']}: empty (0 entries)")
        if "events_out" in extra:
            entry["events_out"] = int(extra["events_out"])
        elif arrays:
            entry["events_out"] = int(next(iter(arrays.values())).shape[0])
        entry.update({k: v for k, v in extra.items() if k in ("cutflow", "n_ls")})
        entry["missing"] = sorted(self.missing)
        out: dict[str, Any] = {"entries": {key: entry}, "missing": set(self.missing)}
        if self.parts_root is not None:
            _parts.write_part(self.parts_root, key, arrays, entry)
        else:
            out["arrays"] = {key: arrays}
        return out

    def postprocess(self, accumulator):
        return accumulator

    # -- helpers for subclasses ------------------------------------------------------------------
    def optional(self, ev: ak.Array, name: str, fill: float | int = np.nan, like: ak.Array | None = None):
        """Branch ``name`` if present, else ``fill`` shaped like ``like`` (and remember the miss)."""
        if has_branch(ev, name):
            return branch(ev, name)
        self.missing.add(name)
        if like is None:
            return None
        return ak.full_like(like, fill, dtype=np.float64 if isinstance(fill, float) else np.int64)
