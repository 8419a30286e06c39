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
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from lhcad.config import ClusterConfig

log = logging.getLogger(__name__)

DASK_TYPES = {"dask-local", "dask-address", "dask-gateway", "dask-jobqueue", "dask-kubernetes"}


def _jobqueue_cluster(cfg: ClusterConfig):
    import dask_jobqueue

    classes = {
        "slurm": dask_jobqueue.SLURMCluster,
        "htcondor": dask_jobqueue.HTCondorCluster,
        "pbs": dask_jobqueue.PBSCluster,
        "sge": dask_jobqueue.SGECluster,
        "lsf": dask_jobqueue.LSFCluster,
    }
    opts = {"cores": cfg.threads_per_worker, "memory": "4GiB", "processes": 1}
    if cfg.jobqueue_system == "htcondor":
        opts["disk"] = "4GiB"
    opts.update(cfg.jobqueue_options)
    return classes[cfg.jobqueue_system](**opts)


def make_dask_cluster(cfg: ClusterConfig):
    """Create (but do not connect to) the Dask cluster object for ``cfg``; None for dask-address."""
    if cfg.type == "dask-local":
        from distributed import LocalCluster

        return LocalCluster(
            n_workers=cfg.workers,
            threads_per_worker=cfg.threads_per_worker,
            memory_limit=cfg.memory_limit,
            processes=True,
            dashboard_address=None,
        )
    if cfg.type == "dask-gateway":
        from dask_gateway import Gateway

        gateway = Gateway(cfg.gateway_address) if cfg.gateway_address else Gateway()
        cluster = gateway.new_cluster(**cfg.gateway_options)
        cluster.scale(cfg.workers)
        return cluster
    if cfg.type == "dask-jobqueue":
        cluster = _jobqueue_cluster(cfg)
        cluster.scale(jobs=cfg.workers)
        return cluster
    if cfg.type == "dask-kubernetes":
        from dask_kubernetes.operator import KubeCluster

        opts = {"name": "lhcad", "n_workers": cfg.workers, **cfg.kubernetes_options}
        return KubeCluster(**opts)
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

        Dask tasks are retried ``retries`` times; a task that still fails raises (nothing is
        silently dropped).
        """
        from lhcad.log import progress

        items = list(items)
        results: list = [None] * len(items)
        with progress() as bar:
            task = bar.add_task(desc, total=len(items))
            if self.client is not None:
                from distributed import as_completed

                futures = self.client.map(
                    fn, items, retries=retries, pure=False,
                    key=[f"{key_prefix or desc}-{i}" for i in range(len(items))] if key_prefix else None,
                )
                index = {f.key: i for i, f in enumerate(futures)}
                for fut in as_completed(futures):
                    results[index[fut.key]] = fut.result()
                    bar.advance(task)
            elif self.config.type == "futures" and len(items) > 1:
                from concurrent.futures import ProcessPoolExecutor

                with ProcessPoolExecutor(max_workers=self.config.workers) as pool:
                    for i, res in enumerate(pool.map(fn, items)):
                        results[i] = res
                        bar.advance(task)
            else:
                for i, item in enumerate(items):
                    results[i] = fn(item)
                    bar.advance(task)
        return results


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
        client = Client(cfg.address) if cluster is None else Client(cluster)
        log.info("Dask client %s (dashboard %s)", client.scheduler.address, client.dashboard_link)
        try:
            yield Cluster(cfg, client)
        finally:
            client.close()
    finally:
        if cluster is not None:
            cluster.close()


def torch_threads_for_worker() -> int:
    """Threads a torch task may use: the Dask worker's thread count, else the CPU count."""
    try:
        from distributed import get_worker

        return max(1, get_worker().state.nthreads)
    except (ValueError, ImportError):
        return max(1, len(os.sched_getaffinity(0)))


def default_workers() -> int:
    """Workers sized to the machine (one per core)."""
    return max(1, len(os.sched_getaffinity(0)))


def iter_chunks(n: int, size: int) -> Iterable[tuple[int, int]]:
    """(start, stop) pairs covering ``range(n)`` in steps of ``size``."""
    for start in range(0, n, size):
        yield start, min(n, start + size)
