"""One factory for every stage's compute: coffea executors and Dask clients from one config block.

``cluster.type`` selects:

=================  ==============================================================================
iterative          in-process, one chunk after another (debugging)
futures            a local process pool (coffea ``FuturesExecutor``; plain futures for model jobs)
dask-local         ``distributed.LocalCluster`` with ``workers`` × ``threads_per_worker``
dask-address       an existing scheduler (``address: tcp://host:8786``)
dask-gateway       an analysis facility's dask-gateway (``gateway_address``, ``gateway_options``)
dask-jobqueue      HTCondor / Slurm / ... batch jobs via dask-jobqueue (``jobqueue_options``)
dask-kubernetes    a ``KubeCluster`` from the dask-kubernetes operator (``kubernetes_options``)
=================  ==============================================================================

Facility back-ends are imported only when chosen, so their packages are optional extras
(``lhcad[facility]``, ``lhcad[k8s]``).

>>> from lhcad.config import ClusterConfig
>>> with open_cluster(ClusterConfig(type="iterative")) as cl:
...     cl.map(lambda x: x * x, [1, 2, 3])
[1, 4, 9]
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from lhcad.config import ClusterConfig, ConfigError

log = logging.getLogger(__name__)

DASK_TYPES = {"dask-local", "dask-address", "dask-gateway", "dask-jobqueue", "dask-kubernetes"}

# glibc allocator settings for processes that stream chunks (Dask workers, the driver in-process).
# Measured on the 2 M-event dijet benchmark (``benchmarks/processors.py``, this 2-core VM, where
# every freshly faulted page is expensive): a chunk's buffers are reused from one chunk to the next
# only if they come from the main heap and stay there. ``MALLOC_ARENA_MAX=1`` keeps a worker's task
# thread on the main (``brk``) arena instead of a thread arena of 64 MiB ``mmap`` heaps that glibc
# unmaps when they empty; the trim threshold keeps up to 1 GiB of freed heap; arrays up to 32 MiB
# (glibc's largest mmap threshold) come from the heap. Dask 1 worker, median of 9 runs each:
# 2.45 -> 1.95 s wall; 2 workers: 2.07 -> 1.80 s. The arena count must be in the environment before
# the process starts (``worker_environ``); the thresholds are set at run time (``tune_malloc``).
MALLOC_MMAP_THRESHOLD = 32 << 20
MALLOC_TRIM_THRESHOLD = 1 << 30


def worker_environ() -> dict[str, str]:
    """Environment for worker processes, set before they start (see :data:`MALLOC_TRIM_THRESHOLD`).

    The Dask LocalCluster of ``dask-local`` passes it through ``distributed.nanny.pre-spawn-environ``
    (whose default ``MALLOC_TRIM_THRESHOLD_=65536`` it replaces), the Helm chart sets it on the
    worker containers and dask-jobqueue jobs export it.
    """
    return {"MALLOC_ARENA_MAX": "1", "MALLOC_MMAP_THRESHOLD_": str(MALLOC_MMAP_THRESHOLD),
            "MALLOC_TRIM_THRESHOLD_": str(MALLOC_TRIM_THRESHOLD)}


_MALLOC_TUNED = False


def tune_malloc() -> None:
    """Apply the allocator thresholds above in this process (Linux glibc; once per process).

    Also the work-around for Dask's nanny starting workers with ``MALLOC_TRIM_THRESHOLD_=65536``,
    which turns off glibc's dynamic mmap threshold, so every array above 128 KiB is a fresh ``mmap``
    whose pages fault in again on each use (measured: 3.7x the page faults, +50 % CPU for the dijet
    chunk) — on a cluster lhcad did not start, too.
    """
    global _MALLOC_TUNED
    if _MALLOC_TUNED:
        return
    _MALLOC_TUNED = True
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3
        libc.mallopt(m_mmap_threshold, MALLOC_MMAP_THRESHOLD)
        libc.mallopt(m_trim_threshold, MALLOC_TRIM_THRESHOLD)
    except (OSError, AttributeError):  # not glibc: nothing to tune
        pass


class ClusterError(ConfigError):
    """The configured back-end cannot be reached or started; the message names the config key.

    A :class:`~lhcad.config.ConfigError`, so the CLI reports it as one line with exit code 2.
    """


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if type(exc).__name__ not in text else text


def _jobqueue_cluster(cfg: ClusterConfig):
    import dask_jobqueue

    classes = {
        "slurm": dask_jobqueue.SLURMCluster,
        "htcondor": dask_jobqueue.HTCondorCluster,
        "pbs": dask_jobqueue.PBSCluster,
        "sge": dask_jobqueue.SGECluster,
        "lsf": dask_jobqueue.LSFCluster,
    }
    opts = {"cores": cfg.threads_per_worker, "memory": "4GiB", "processes": 1,
            "job_script_prologue": [f"export {k}={v}" for k, v in worker_environ().items()]}
    if cfg.jobqueue_system == "htcondor":
        opts["disk"] = "4GiB"
    opts.update(cfg.jobqueue_options)
    return classes[cfg.jobqueue_system](**opts)


def _gateway_cluster(cfg: ClusterConfig):
    from dask_gateway import Gateway

    where = cfg.gateway_address or "the address in the dask config (gateway.address)"
    error = None
    try:
        gateway = Gateway(cfg.gateway_address) if cfg.gateway_address else Gateway()
        cluster = gateway.new_cluster(**cfg.gateway_options)
    except Exception as exc:  # connection, auth and option errors all mean: no cluster
        error = _one_line(exc)
    if error is not None:
        raise ClusterError(f"cluster.gateway_address: cannot start a cluster at {where}: {error}")
    cluster.scale(cfg.workers)
    return cluster


def _kube_cluster(cfg: ClusterConfig):
    from dask_kubernetes.operator import KubeCluster

    opts = {"name": "lhcad", "n_workers": cfg.workers, "resource_timeout": int(cfg.timeout),
            **cfg.kubernetes_options}
    error = None
    try:
        return KubeCluster(**opts)
    except Exception as exc:  # no kubeconfig, unreachable API server, operator not installed
        error = _one_line(exc)
    _forget_failed_kube_clusters(KubeCluster)
    raise ClusterError(f"cluster.type 'dask-kubernetes': cannot create KubeCluster {opts['name']!r}: {error}")


def _forget_failed_kube_clusters(kube_cluster_class) -> None:
    """Work-around (dask-kubernetes 2026.3): a KubeCluster whose creation failed stays in
    ``KubeCluster._instances`` and the atexit reaper then tries to delete it from the unreachable
    API server, printing a long traceback after our one-line error. Drop those never-started ones.
    """
    from distributed.core import Status

    for cluster in list(kube_cluster_class._instances):
        if cluster.status != Status.running:
            kube_cluster_class._instances.discard(cluster)


def make_dask_cluster(cfg: ClusterConfig):
    """Create (but do not connect to) the Dask cluster object for ``cfg``; None for dask-address."""
    if cfg.type == "dask-local":
        import dask
        from distributed import LocalCluster

        # (read by each Nanny when it is created, applied whenever it (re)starts its worker)
        env = {**dask.config.get("distributed.nanny.pre-spawn-environ", {}), **worker_environ()}
        with dask.config.set({"distributed.nanny.pre-spawn-environ": env}):
            return LocalCluster(
                n_workers=cfg.workers,
                threads_per_worker=cfg.threads_per_worker,
                memory_limit=cfg.memory_limit,
                processes=True,
                dashboard_address=None,
            )
    if cfg.type == "dask-gateway":
        return _gateway_cluster(cfg)
    if cfg.type == "dask-jobqueue":
        cluster = _jobqueue_cluster(cfg)
        submit = cluster.job_cls.submit_command.split()[0]
        if shutil.which(submit) is None:
            cluster.close()
            raise ClusterError(
                f"cluster.jobqueue_system: {cfg.jobqueue_system!r} submits jobs with {submit!r}, "
                "which is not on PATH (run lhcad on the facility's submit node)"
            )
        cluster.scale(jobs=cfg.workers)
        return cluster
    if cfg.type == "dask-kubernetes":
        return _kube_cluster(cfg)
    if cfg.type == "dask-address":
        return None
    raise ValueError(f"cluster.type {cfg.type!r} has no Dask cluster")


@dataclass
class Cluster:
    """An open compute back-end: a Dask client (or None) plus the config that made it."""

    config: ClusterConfig
    client: Any = None  # distributed.Client for dask-* types

    @property
    def n_workers(self) -> int:
        if self.client is not None:
            return max(1, len(self.client.scheduler_info(n_workers=-1)["workers"]))
        return self.config.workers if self.config.type == "futures" else 1

    def coffea_executor(self, **kwargs):
        """The coffea executor matching this back-end."""
        from coffea import processor

        if self.config.type == "iterative":
            return processor.IterativeExecutor(**kwargs)
        if self.config.type == "futures":
            return processor.FuturesExecutor(workers=self.config.workers, **kwargs)
        kwargs.setdefault("retries", 3)
        return processor.DaskExecutor(client=self.client, **kwargs)

    def map(
        self,
        fn: Callable,
        items: Sequence,
        *,
        retries: int = 2,
        desc: str = "tasks",
        key_prefix: str | None = None,
    ) -> list:
        """Run ``fn(item)`` for every item on this back-end, with a progress bar; results in order.

        A failing task is retried ``retries`` times on every back-end (Dask's own task retries,
        re-submission to the process pool, or a loop in-process); a task that still fails raises
        its exception and the remaining tasks are cancelled (nothing is silently dropped).
        """
        from lhcad.log import progress

        items = list(items)
        results: list = [None] * len(items)
        with progress() as bar:
            task = bar.add_task(desc, total=len(items))
            if self.client is not None:
                self._map_dask(fn, items, results, retries, key_prefix, lambda: bar.advance(task))
            elif self.config.type == "futures" and len(items) > 1:
                self._map_pool(fn, items, results, retries, lambda: bar.advance(task))
            else:
                for i, item in enumerate(items):
                    results[i] = _call_with_retries(fn, item, retries)
                    bar.advance(task)
        return results

    def _map_dask(self, fn, items, results, retries, key_prefix, advance) -> None:
        from distributed import as_completed

        keys = [f"{key_prefix}-{i}" for i in range(len(items))] if key_prefix else None
        futures = self.client.map(fn, items, retries=retries, pure=False, key=keys)
        index = {f.key: i for i, f in enumerate(futures)}
        try:
            for fut in as_completed(futures):
                results[index[fut.key]] = fut.result()
                advance()
        except BaseException:
            self.client.cancel(futures)
            raise

    def _map_pool(self, fn, items, results, retries, advance) -> None:
        from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

        n_workers = self.config.workers
        threads = max(1, len(os.sched_getaffinity(0)) // n_workers)
        with ProcessPoolExecutor(max_workers=n_workers, initializer=_set_pool_threads,
                                 initargs=(threads,)) as pool:
            pending = {pool.submit(fn, item): (i, 0) for i, item in enumerate(items)}
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    i, attempt = pending.pop(fut)
                    exc = fut.exception()
                    if exc is None:
                        results[i] = fut.result()
                        advance()
                    elif attempt < retries:
                        log.warning("task %d failed (%s), retry %d/%d", i, _one_line(exc), attempt + 1, retries)
                        pending[pool.submit(fn, items[i])] = (i, attempt + 1)
                    else:
                        for other in pending:
                            other.cancel()
                        raise exc


def _call_with_retries(fn: Callable, item: Any, retries: int) -> Any:
    for attempt in range(retries + 1):
        try:
            return fn(item)
        except Exception as exc:
            if attempt == retries:
                raise
            log.warning("task failed (%s), retry %d/%d", _one_line(exc), attempt + 1, retries)
    raise AssertionError("unreachable")


@contextlib.contextmanager
def open_cluster(cfg: ClusterConfig | None = None) -> Iterator[Cluster]:
    """Open the back-end described by ``cfg`` and close everything it created on exit."""
    cfg = cfg or ClusterConfig()
    if cfg.type not in DASK_TYPES:
        yield Cluster(cfg)
        return
    from distributed import Client

    cluster = make_dask_cluster(cfg)
    try:
        if cluster is None:
            error = None
            try:
                client = Client(cfg.address, timeout=cfg.timeout)
            except (OSError, TimeoutError) as exc:
                error = _one_line(exc)
            if error is not None:
                raise ClusterError(
                    f"cluster.address: no Dask scheduler answered at {cfg.address} within "
                    f"{cfg.timeout:g} s: {error}"
                )
        else:
            client = Client(cluster, timeout=cfg.timeout)
        log.info("Dask client %s (dashboard %s)", client.scheduler.address, client.dashboard_link)
        try:
            yield Cluster(cfg, client)
        finally:
            client.close()
    finally:
        if cluster is not None:
            cluster.close()


_POOL_THREADS: int | None = None  # set in process-pool workers by ``Cluster._map_pool``


def _set_pool_threads(n: int) -> None:
    global _POOL_THREADS
    _POOL_THREADS = n


def torch_threads_for_worker() -> int:
    """Threads a torch task may use: the Dask worker's thread count; in a process-pool worker its
    share of the CPUs (CPU count // pool size, so the pool does not oversubscribe); else the CPU count."""
    try:
        from distributed import get_worker

        return max(1, get_worker().state.nthreads)
    except (ValueError, ImportError):
        pass
    if _POOL_THREADS is not None:
        return _POOL_THREADS
    return max(1, len(os.sched_getaffinity(0)))


def default_workers() -> int:
    """Workers sized to the machine (one per core)."""
    return max(1, len(os.sched_getaffinity(0)))


def iter_chunks(n: int, size: int) -> Iterable[tuple[int, int]]:
    """(start, stop) pairs covering ``range(n)`` in steps of ``size``."""
    for start in range(0, n, size):
        yield start, min(n, start + size)
