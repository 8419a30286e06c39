"""Runner glue: fileset → coffea ``Runner`` on the configured executor → parts → Zarr tables.

:func:`process` is the one entry point (the CLI, ``lhcad run`` and the benchmark call it):

1. read the coffea fileset (JSON path or dict; local paths and ``root://`` URLs);
2. ``Runner.preprocess`` splits the files into chunks; chunks whose part is already committed in
   ``<store>/_parts/<table>-<config hash>/`` are skipped (resume after a kill);
3. ``Runner.run`` executes the processor on the remaining chunks; each worker writes its chunk's
   part itself (:func:`lhcad.processors.parts.write_part`, atomic rename), so the driver never
   holds events;
4. :mod:`processors.consolidate` lays the parts out in fileset order and writes the contiguous
   store tables with parallel tasks on the same executor (each task whole, disjoint Zarr chunks),
   writes ``manifest/<table>`` and the provenance, then removes the parts.

Bad inputs: with ``skipbadfiles`` an unreadable, truncated, empty or wrong-tree file and chunks
that fail (missing required branch, broken baskets) are recorded in the manifest with their reason
and summarised; ``events processed + events skipped == events in readable inputs``. Without it the
first bad file stops the run with one error naming it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import time
import uuid as _uuid
import warnings
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import uproot

from lhcad import log as _log
from lhcad import store as _store
from lhcad.config import ClusterConfig, ConfigError

from . import parts as _parts
from .base import InputError, StoreProcessor, chunk_key, one_line

log = logging.getLogger("lhcad.processors")

# exceptions that mark an *input* as bad (file missing/corrupt, tree or branch missing)
BAD_INPUT_ERRORS: tuple[type[BaseException], ...] = (
    OSError, EOFError, KeyError, ValueError, zlib.error, uproot.deserialization.DeserializationError,
)


def processor_class(table: str) -> type[StoreProcessor]:
    from .dijet import DijetProcessor
    from .l1 import L1Processor
    from .lumi import LumiProcessor

    classes = {"dijet": DijetProcessor, "lumi": LumiProcessor, "l1": L1Processor}
    if table not in classes:
        raise ConfigError(f"processor {table!r}: unknown (choose from {', '.join(classes)})")
    return classes[table]


# ------------------------------------------------------------------------------------------ fileset
def _is_url(path: str) -> bool:
    return "://" in path


def load_fileset(fileset: str | Path | Mapping, treename: str = "Events") -> dict[str, dict]:
    """Normalise a coffea fileset to ``{dataset: {"files": {path: tree}, "metadata": {...}}}``.

    Accepts ``{ds: [files]}``, ``{ds: {"files": [...] | {file: tree}, "treename": ..., "metadata":
    ...}}`` or a JSON file holding one. Relative local paths are taken relative to the JSON file;
    URLs (``root://``, ``https://`` ...) are kept as they are.
    """
    base = None
    source = "<fileset>"
    if not isinstance(fileset, Mapping):
        path = Path(fileset)
        source = str(path)
        try:
            fileset = json.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigError(f"{path}: fileset file not found") from None
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path}: not valid JSON ({exc.msg}, line {exc.lineno})") from None
        base = path.resolve().parent
    if not isinstance(fileset, Mapping) or not fileset:
        raise ConfigError(f"{source}: expected a coffea fileset {{dataset: {{'files': ...}}}}")
    out: dict[str, dict] = {}
    for ds, spec in fileset.items():
        tree = treename
        meta: dict = {}
        if isinstance(spec, Mapping):
            if "files" not in spec:
                raise ConfigError(f"{source}: {ds}: missing key 'files'")
            tree = spec.get("treename", tree)
            meta = dict(spec.get("metadata") or {})
            files = spec["files"]
        else:
            files = spec
        if isinstance(files, str):
            files = [files]
        if isinstance(files, Mapping):
            items = [(f, t or tree) for f, t in files.items()]
        elif isinstance(files, list):
            items = [(f, tree) for f in files]
        else:
            raise ConfigError(f"{source}: {ds}: 'files' must be a list or a mapping file -> tree")
        norm = {}
        for f, t in items:
            f = str(f)
            if not _is_url(f) and base is not None and not Path(f).is_absolute():
                f = str((base / f).resolve())
            norm[f] = t
        out[str(ds)] = {"files": norm, "metadata": meta}
    return out


def probe_file(path: str, tree: str, timeout: int = 30) -> tuple[int | None, str]:
    """(entries, "") for a readable file/tree, else (None, reason naming the file)."""
    try:
        with uproot.open({path: None}, timeout=timeout) as f:
            if tree not in f:
                return None, f"{path}: no tree {tree!r} (have: {', '.join(sorted(set(k.split(';')[0] for k in f.keys()))) or 'nothing'})"
            return int(f[tree].num_entries), ""
    except FileNotFoundError:
        return None, f"{path}: file not found"
    except Exception as exc:  # noqa: BLE001 - any failure here means "unreadable"; the reason is kept
        return None, one_line(f"{path}: unreadable ROOT file ({type(exc).__name__}: {exc})")


# ------------------------------------------------------------------------------------------ helpers
def effective_params(cls: type[StoreProcessor], options: Mapping[str, Any]) -> dict[str, Any]:
    """The processor's hyper-parameters: ``__init__`` defaults updated with ``options``."""
    import inspect

    sig = inspect.signature(cls.__init__)
    params = {k: p.default for k, p in sig.parameters.items()
              if k != "self" and p.kind is p.POSITIONAL_OR_KEYWORD and p.default is not p.empty}
    params.update(options)
    return params


def config_hash(table: str, params: Mapping[str, Any], treename: str) -> str:
    """Identity of a processing configuration (names the parts folder: no mixing on resume)."""
    blob = json.dumps({"table": table, "params": dict(params), "treename": treename}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def parts_root_for(store: str, table: str, digest: str) -> str:
    return f"{str(store).rstrip('/')}/{_store.PARTS_DIR}/{table}-{digest}"


def _item_key(item) -> str:
    uid = str(_uuid.UUID(bytes=item.fileuuid)) if len(item.fileuuid) else ""
    return chunk_key({"dataset": item.dataset, "filename": item.filename, "fileuuid": uid,
                      "entrystart": item.entrystart, "entrystop": item.entrystop})


def _mapper(cl, pool=None):
    """``map(fn, items, desc)`` on the run's own workers (consolidation tasks write disjoint Zarr chunks)."""
    from lhcad.log import progress_map

    if cl.client is not None:
        return lambda fn, items, desc: cl.map(fn, items, retries=2, desc=desc)
    if pool is None:
        return progress_map

    def pool_map(fn, items, desc):
        with _log.progress() as bar:
            task = bar.add_task(desc, total=len(items))
            out = []
            for result in pool.map(fn, items):
                out.append(result)
                bar.advance(task)
            return out
    return pool_map


def _parallelism(cl, cfg: ClusterConfig) -> int:
    """How many consolidation tasks can run at once: the Dask threads (or the configured workers of
    an adaptive cluster still scaling up), the process pool's size, or 1 in-process."""
    if cl.client is not None:
        return max(1, sum(cl.client.nthreads().values()), int(cfg.workers or 1))
    return max(1, int(cfg.workers or 1)) if cfg.type == "futures" else 1


class _ReplicatingClient:
    """A ``distributed.Client`` whose :meth:`submit` results are copied to every worker.

    Work-around (coffea 2026.9 ``DaskExecutor`` with ``Runner``): the pickled processor is sent as
    one task result (``client.submit(lambda x: x, processor)``, the "heavy input") on which every
    chunk task depends. Dask's scheduler then places all chunk tasks on the one worker holding it
    and the other workers get chunks only by work stealing, late (measured with 2 workers and 4
    chunks: the second worker started its first chunk 1.1 s after the first, or ran 1 of 4 chunks).
    With the result on every worker the scheduler spreads the chunks by occupancy from the start.
    The result stays a task (not ``scatter``), so a lost copy can be recomputed after a worker dies.
    """

    def __init__(self, client):
        self._client = client

    def submit(self, *args, **kwargs):
        future = self._client.submit(*args, **kwargs)
        self._client.replicate([future])
        return future

    def __getattr__(self, name):
        return getattr(self._client, name)


def _spread_chunks(executor):
    """The coffea executor, with the Dask heavy-input work-around (:class:`_ReplicatingClient`)."""
    from coffea.processor import DaskExecutor

    if isinstance(executor, DaskExecutor) and executor.client is not None:
        return executor.copy(client=_ReplicatingClient(executor.client))
    return executor


def _first_bad_input(fileset: dict[str, dict]) -> str | None:
    for spec in fileset.values():
        for f, tree in spec["files"].items():
            n, reason = probe_file(f, tree)
            if n is None:
                return reason
    return None


def _find_input_error(exc: BaseException) -> InputError | None:
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, InputError):
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def _unreadable_chunk(exc: BaseException, chunks) -> str | None:
    """One line naming the file when coffea failed to open a chunk or build its NanoEvents.

    Those steps run before the processor (with ``preload`` they read the chunk's branches), so a
    truncated or corrupt file fails there; coffea's message holds the work item (file, entry range)
    and the original error, also after a Dask worker sent it back.
    """
    texts = []
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        texts.append(str(exc))
        exc = exc.__cause__ or exc.__context__
    text = " ".join(texts)
    if "Failed creating nanoevents" not in text and "Failed to open file" not in text:
        return None
    for c in chunks:
        if c.filename in text:
            top = next(t for t in texts if "The error was:" in t or c.filename in t)
            why = top.split("The error was:", 1)[-1].strip().rstrip(".")
            return one_line(f"{c.filename}: unreadable (chunk {c.entrystart}-{c.entrystop}: {why})")
    return None


# ------------------------------------------------------------------------------------------ process
def process(
    table: str,
    fileset: str | Path | Mapping,
    store: str,
    *,
    cluster: ClusterConfig | Any = None,
    chunksize: int = 200_000,
    skipbadfiles: bool = False,
    treename: str = "Events",
    options: Mapping[str, Any] | None = None,
    keep_parts: bool = False,
) -> dict[str, Any]:
    """Run processor ``table`` (dijet | lumi | l1) over ``fileset`` into ``store``; returns a summary.

    ``cluster`` is a :class:`~lhcad.config.ClusterConfig` (opened and closed here) or an already open
    :class:`lhcad.cluster.Cluster` (reused). ``options`` are the processor's hyper-parameters (e.g. ``{"pt_min": 300}`` for dijet). A rerun
    with the same arguments after a crash reuses every committed chunk. Raises
    :class:`lhcad.config.ConfigError` for bad inputs (naming the file) unless ``skipbadfiles``.
    """
    from coffea import processor
    from coffea.nanoevents import NanoAODSchema

    from lhcad.cluster import open_cluster

    from .consolidate import consolidate

    t0 = time.perf_counter()
    cls = processor_class(table)
    options = dict(options or {})
    fs = load_fileset(fileset, treename)
    store = str(store)
    digest = config_hash(table, effective_params(cls, options), treename)
    parts_root = parts_root_for(store, table, digest)
    try:
        proc = cls(**options, parts_root=parts_root, skipbadfiles=skipbadfiles)
    except TypeError as exc:
        raise ConfigError(f"processor {table}: bad option ({exc})") from None

    # local files that are not there: one clear error now (or recorded as skipped)
    bad_files: dict[str, str] = {}
    for spec in fs.values():
        for f in spec["files"]:
            if not _is_url(f) and not Path(f).exists():
                if not skipbadfiles:
                    raise ConfigError(f"{f}: input file not found")
                bad_files[f] = f"{f}: file not found"
    preload = {"preload": list(proc.bulk_branches())} if proc.bulk_branches() else {}
    run_fs = {
        ds: {"files": {f: t for f, t in spec["files"].items() if f not in bad_files}, "metadata": spec["metadata"],
             **preload}
        for ds, spec in fs.items()
    }
    run_fs = {ds: spec for ds, spec in run_fs.items() if spec["files"]}

    if cluster is None or isinstance(cluster, ClusterConfig):
        cluster_cfg = cluster or ClusterConfig(type="iterative")
        opened = open_cluster(cluster_cfg)
    else:  # an open lhcad.cluster.Cluster
        cluster_cfg = cluster.config
        opened = contextlib.nullcontext(cluster)
    skip = BAD_INPUT_ERRORS if skipbadfiles else False
    metrics: dict[str, Any] = {}
    with opened as cl, warnings.catch_warnings():
        warnings.filterwarnings("ignore", module="coffea.nanoevents.schemas")
        warnings.filterwarnings("ignore", message="Skipping bad file")
        ex_opts: dict[str, Any] = {"status": not _log._state["quiet"]}
        if cluster_cfg.type == "futures":
            # one reusable process pool for preprocessing and processing (and for the next call):
            # starting a fresh pool per step re-imports coffea in every worker
            from loky import get_reusable_executor

            ex_opts["pool"] = get_reusable_executor(max_workers=cluster_cfg.workers, timeout=60)
        runner = processor.Runner(
            executor=_spread_chunks(cl.coffea_executor(**ex_opts)), schema=NanoAODSchema, chunksize=chunksize,
            skipbadfiles=skip, savemetrics=True,
        )
        t_pre = time.perf_counter()
        try:
            chunks = list(runner.preprocess(run_fs, treename=treename)) if run_fs else []
        except Exception as exc:  # noqa: BLE001 - turned into one line naming the bad file
            reason = _first_bad_input(run_fs)
            raise ConfigError(reason or f"preprocessing failed: {exc}") from None
        done = _parts.part_entries(parts_root)
        keys = [_item_key(c) for c in chunks]
        todo = [c for c, k in zip(chunks, keys) if k not in done]
        reused = len(chunks) - len(todo)
        if reused:
            log.info("%s: resuming, %d of %d chunks already committed", table, reused, len(chunks))
        t_run = time.perf_counter()
        if todo:
            try:
                metrics = runner.run(todo, proc, treename=treename).get("metrics", {})
            except Exception as exc:  # noqa: BLE001
                err = _find_input_error(exc)
                if err is not None:
                    raise ConfigError(str(err)) from None
                reason = _unreadable_chunk(exc, todo)
                if reason is not None:
                    raise ConfigError(reason) from None
                raise
        entries = _parts.part_entries(parts_root)

        # files coffea dropped in preprocessing (skipbadfiles): find out why, count their events
        chunk_files = {c.filename for c in chunks}
        skipped_files = []
        for ds, spec in fs.items():
            for f, tree in spec["files"].items():
                if f in chunk_files:
                    continue
                if f in bad_files:
                    n, reason = None, bad_files[f]
                else:
                    n, reason = probe_file(f, tree)
                    if n == 0:
                        reason = f"{f}: empty (0 entries in {tree!r})"
                if n is None and not skipbadfiles:
                    raise ConfigError(reason)
                skipped_files.append({"dataset": ds, "file": f, "events": n or 0, "readable": n is not None,
                                      "reason": reason})
        for c, k in zip(chunks, keys):
            if k in entries:
                continue
            # coffea skipped the chunk before our processor ran (file could not be re-opened): record it
            if not skipbadfiles:
                raise RuntimeError(f"{table}: chunk {k} produced no part")
            _n, why = probe_file(c.filename, c.treename)
            entries[k] = {"key": k, "dataset": c.dataset, "file": c.filename, "uuid": "", "treename": c.treename,
                          "entrystart": c.entrystart, "entrystop": c.entrystop,
                          "events_in": c.entrystop - c.entrystart, "events_out": 0, "status": "skipped",
                          "reason": why or f"{c.filename}: chunk {c.entrystart}-{c.entrystop} could not be read"}

        t_cons = time.perf_counter()
        order = {k: i for i, k in enumerate(keys)}
        ordered = sorted((entries[k] for k in keys), key=lambda e: order[e["key"]])
        summary = consolidate(
            table, store, parts_root, ordered, datasets=list(fs), options=options, proc=proc,
            skipped_files=skipped_files, fileset=fs, chunksize=chunksize, treename=treename,
            mapper=_mapper(cl, ex_opts.get("pool")), workers=_parallelism(cl, cluster_cfg),
        )
        summary.update({
            "chunks": len(chunks), "chunks_reused": reused, "chunks_run": len(todo),
            "wall_s": round(time.perf_counter() - t0, 3), "executor": cluster_cfg.type,
            "preprocess_s": round(t_run - t_pre, 3), "run_s": round(t_cons - t_run, 3),
            "consolidate_s": round(time.perf_counter() - t_cons, 3),
        })
    if not keep_parts:
        _store.remove_tree(parts_root)
    for name in summary["missing_branches"]:
        log.warning("%s: optional branch %s missing in some inputs: its features are NaN", table, name)
    for row in summary["skipped"]:
        log.warning("skipped %s", row["reason"])
    summary["process_s"] = round(float(metrics.get("processtime", 0.0)), 3)
    summary["branches_read"] = sorted({str(c).rsplit("-", 1)[0] for c in metrics.get("columns", [])})
    return summary


# ------------------------------------------------------------------------------------------ lhcad run
GENERATED_SOURCE = {"dijet": "dijet", "lumi": "dqm", "l1": "l1"}


def pipeline_stage(cfg, ctx) -> dict[str, Any]:
    """``lhcad run`` stage "process": every configured processor into ``cfg.store``.

    ``process.<table>: generated`` reads ``<workdir>/generated/{dijet,dqm,l1}/fileset.json``; a
    processor whose generated input was switched off (``generate.<kind>: null``) is skipped.
    """
    from lhcad.cluster import open_cluster

    pc = cfg.process
    out_dir = Path(ctx.workdir) / "process"
    out_dir.mkdir(parents=True, exist_ok=True)
    figures: dict[str, Any] = {}
    artefacts: dict[str, str] = {}
    with open_cluster(cfg.cluster) as cl:
        for table in ("dijet", "lumi", "l1"):
            source = getattr(pc, table)
            if source is None:
                continue
            if source == "generated":
                kind = GENERATED_SOURCE[table]
                path = Path(ctx.workdir) / "generated" / kind / "fileset.json"
                if getattr(cfg.generate, kind) is None and not path.exists():
                    log.info("process %s: generate.%s is off, skipped", table, kind)
                    continue
                if not path.exists():
                    raise ConfigError(f"{path}: generated fileset not found (stage generate must run first)")
            else:
                path = Path(source)
            summary = process(table, path, cfg.store, cluster=cl, chunksize=pc.chunksize,
                              skipbadfiles=pc.skipbadfiles, treename=pc.treename, options=pc.options(table))
            js = out_dir / f"{table}_summary.json"
            js.write_text(json.dumps(summary, indent=1))
            artefacts[f"{table}_summary"] = str(js)
            figures[f"{table}_events_processed"] = summary["events_processed"]
            figures[f"{table}_events_skipped"] = summary["events_skipped"]
            figures[f"{table}_{'ls' if table == 'lumi' else 'rows'}"] = summary["rows"]
            figures[f"{table}_wall_s"] = summary["wall_s"]
            if summary["missing_branches"]:
                figures[f"{table}_missing_branches"] = ", ".join(summary["missing_branches"])
    artefacts["store"] = str(cfg.store)
    return {"figures": figures, "plots": [], "artefacts": artefacts}
