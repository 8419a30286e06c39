"""The cluster factory (lhcad.cluster) on real back-ends.

Local back-ends (iterative, futures, dask-local) and a real ``distributed`` scheduler with two
workers started as separate processes on loopback (``dask-address``) run real tasks and a real
coffea ``Runner``; the facility back-ends are checked as far as a machine without a facility
allows: jobqueue job scripts render, and gateway / Kubernetes without a reachable server fail
fast with one clear line.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lhcad.cluster import ClusterError, _jobqueue_cluster, open_cluster
from lhcad.config import ClusterConfig, ConfigError, load

REPO = Path(__file__).resolve().parents[1]
NANO_DY = Path("../shared/data/nanoaod/nano_dy.root")  # relative to the repo root


# ------------------------------------------------------------------------- task functions
# Module-level so that process pools and Dask workers can unpickle them (they import this module,
# so its top-level imports are kept light: coffea & co. are imported inside the tests).
def square_slowly(x: int) -> int:
    time.sleep(0.02 * (5 - x % 5))  # later items often finish first
    return x * x


def flaky(item: tuple[str, int, int]) -> int:
    """Fails the first ``fails`` calls for this item (counted in a file, across processes)."""
    counter, x, fails = item
    path = Path(counter)
    with path.open("a") as fh:
        fh.write(".")
    calls = len(path.read_text())
    if calls <= fails:
        raise ValueError(f"item {x}: planned failure {calls}/{fails}")
    return x + 100


def worker_name(x: int) -> str:
    from distributed import get_worker

    time.sleep(0.05)
    return get_worker().name


def task_threads(_: int) -> int:
    from lhcad.cluster import torch_threads_for_worker

    return torch_threads_for_worker()


def counters(tmp_path: Path, n: int) -> list[str]:
    return [str(tmp_path / f"calls-{i}") for i in range(n)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------------- local back-ends
@pytest.fixture(scope="module", params=["iterative", "futures", "dask-local"])
def local_cluster(request):
    cfg = ClusterConfig(type=request.param, workers=2, threads_per_worker=1, memory_limit="1GiB")
    with open_cluster(cfg) as cl:
        yield cl


def test_map_returns_results_in_item_order(local_cluster):
    assert local_cluster.map(square_slowly, range(12), desc="squares") == [x * x for x in range(12)]
    if local_cluster.config.type == "dask-local":
        assert local_cluster.n_workers == 2
        assert local_cluster.client.scheduler.address.startswith("tcp://127.0.0.1")


def test_tasks_do_not_oversubscribe_the_cpus(local_cluster):
    """Torch threads per task × tasks running at once stays within the CPUs (a process-pool task
    used to claim every CPU, so two pool workers ran 2 × N threads)."""
    threads = set(local_cluster.map(task_threads, range(4)))
    concurrent = {"iterative": 1, "futures": 2, "dask-local": 2}[local_cluster.config.type]
    cpus = len(os.sched_getaffinity(0))
    assert len(threads) == 1
    if local_cluster.config.type == "dask-local":
        assert threads == {1}  # threads_per_worker=1
    else:
        assert threads == {max(1, cpus // concurrent)}


def allocator_settings(_item) -> tuple:
    """(MALLOC_* environment, glibc's trim threshold after tune_malloc) in the process running a task."""
    import ctypes

    from lhcad.cluster import tune_malloc

    class MallInfo2(ctypes.Structure):  # glibc >= 2.33: only to see the heap is kept after a free
        _fields_ = [(name, ctypes.c_size_t) for name in
                    ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                     "keepcost")]

    tune_malloc()
    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = MallInfo2
    libc.malloc.restype = ctypes.c_void_p
    blocks = [libc.malloc(1 << 20) for _ in range(256)]  # 256 MiB in 1 MiB blocks (< mmap threshold)
    for b in blocks:
        libc.free(ctypes.c_void_p(b))
    kept = libc.mallinfo2().fordblks  # freed bytes the heap still holds (not returned to the OS)
    return {k: v for k, v in os.environ.items() if k.startswith("MALLOC_")}, kept >= 200 << 20


def test_workers_keep_their_heap_between_chunks(local_cluster):
    """dask-local workers start with lhcad's allocator environment (one arena, 1 GiB trim
    threshold instead of Dask's 64 KiB); in every back-end a freed chunk's memory stays in the heap."""
    from lhcad.cluster import worker_environ

    env, kept = local_cluster.map(allocator_settings, [0])[0]
    assert kept
    if local_cluster.config.type == "dask-local":
        assert env == worker_environ()


def test_map_retries_a_failing_task(local_cluster, tmp_path):
    calls = counters(tmp_path, 4)
    items = [(calls[0], 0, 0), (calls[1], 1, 2), (calls[2], 2, 1), (calls[3], 3, 0)]
    assert local_cluster.map(flaky, items, retries=2) == [100, 101, 102, 103]
    assert [len(Path(c).read_text()) for c in calls] == [1, 3, 2, 1]


def test_map_raises_when_retries_are_exhausted(local_cluster, tmp_path):
    calls = counters(tmp_path, 3)
    items = [(calls[0], 0, 0), (calls[1], 1, 5), (calls[2], 2, 0)]
    with pytest.raises(ValueError, match="item 1: planned failure 2/5"):
        local_cluster.map(flaky, items, retries=1)
    assert len(Path(calls[1]).read_text()) == 2  # first try + one retry, then it gave up


# ------------------------------------------------------------- separate scheduler + 2 workers
@contextlib.contextmanager
def loopback_dask(tmp: Path, workers: int = 2):
    """A real ``dask scheduler`` and ``workers`` ``dask worker`` processes on 127.0.0.1 (they get
    this process's environment); yields the scheduler address, kills them on exit."""
    sched_file = tmp / "scheduler.json"
    dask = str(Path(sys.executable).with_name("dask"))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "tests"), str(REPO)]),
           "OMP_NUM_THREADS": "1"}
    procs: list[subprocess.Popen] = []

    def start(*args: str) -> subprocess.Popen:
        log = (tmp / f"{args[0]}-{len(procs)}.log").open("w")
        proc = subprocess.Popen([dask, *args], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
        procs.append(proc)
        return proc

    try:
        start("scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
              "--scheduler-file", str(sched_file))
        deadline = time.monotonic() + 90
        while not sched_file.exists() or not sched_file.read_text().strip():
            if procs[0].poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"dask scheduler did not start: {(tmp / 'scheduler-0.log').read_text()}")
            time.sleep(0.2)
        address = json.loads(sched_file.read_text())["address"]
        for i in range(workers):
            start("worker", address, "--name", f"w{i}", "--nthreads", "1", "--no-nanny",
                  "--no-dashboard", "--memory-limit", "0", "--host", "127.0.0.1")
        from distributed import Client

        with Client(address, timeout=60) as client:
            client.wait_for_workers(workers, timeout=120)
        yield address
    finally:
        # Workers first, then the scheduler. SIGKILL: nothing to flush, and a graceful shutdown
        # of each process takes many seconds on a loaded machine (--no-nanny: no child processes).
        for proc in reversed(procs):
            proc.kill()
            proc.wait(timeout=30)


@pytest.fixture(scope="module")
def scheduler_address(tmp_path_factory):
    """A real ``dask scheduler`` and two ``dask worker`` processes on 127.0.0.1."""
    with loopback_dask(tmp_path_factory.mktemp("dask")) as address:
        yield address


def test_dask_address_map_runs_on_the_external_workers(scheduler_address, tmp_path):
    cfg = ClusterConfig(type="dask-address", address=scheduler_address, timeout=30)
    with open_cluster(cfg) as cl:
        assert cl.client.scheduler.address == scheduler_address
        assert cl.n_workers == 2
        assert cl.map(square_slowly, range(10)) == [x * x for x in range(10)]
        names = cl.map(worker_name, range(8), key_prefix="which-worker")
        assert set(names) <= {"w0", "w1"} and len(names) == 8
        calls = counters(tmp_path, 2)
        assert cl.map(flaky, [(calls[0], 0, 1), (calls[1], 1, 0)], retries=1) == [100, 101]
        with pytest.raises(ValueError, match="planned failure"):
            cl.map(flaky, [(str(tmp_path / "again"), 5, 3)], retries=1)
        # The workers are still there after a failed map (the failure did not kill them).
        assert cl.n_workers == 2


def test_dask_address_runs_a_coffea_runner_on_real_nanoaod(scheduler_address, repo_root):
    import awkward as ak
    import uproot
    from coffea import processor
    from coffea.nanoevents import NanoAODSchema

    class MuonCounter(processor.ProcessorABC):
        """A trivial NanoAOD processor: events, muons and the summed muon pT per dataset."""

        def process(self, events):
            import awkward as ak

            dataset = events.metadata["dataset"]
            return {dataset: {"events": len(events), "muons": int(ak.sum(ak.num(events.Muon))),
                              "muon_pt": float(ak.sum(events.Muon.pt))}}

        def postprocess(self, accumulator):
            return accumulator

    assert (repo_root / NANO_DY).is_file()
    path = str((repo_root / NANO_DY).resolve())
    with uproot.open(path) as f:
        muon_pt = f["Events"]["Muon_pt"].array()
    expected = {"events": len(muon_pt), "muons": int(ak.sum(ak.num(muon_pt))), "muon_pt": float(ak.sum(muon_pt))}

    cfg = load_cluster_config({"type": "dask-address", "address": scheduler_address})
    with open_cluster(cfg) as cl:
        runner = processor.Runner(executor=cl.coffea_executor(), chunksize=20, schema=NanoAODSchema,
                                  savemetrics=True)
        out, metrics = runner({"dy": {"files": {path: "Events"}}}, MuonCounter(), treename="Events")
    assert metrics["chunks"] == 2 and metrics["entries"] == 40
    assert out["dy"]["events"] == expected["events"] == 40
    assert out["dy"]["muons"] == expected["muons"]
    assert out["dy"]["muon_pt"] == pytest.approx(expected["muon_pt"], rel=1e-6)


def load_cluster_config(block: dict) -> ClusterConfig:
    from lhcad.config import validate

    return validate({"cluster": block}, "<test>").cluster


def test_dask_address_without_a_scheduler_fails_with_one_line():
    cfg = ClusterConfig(type="dask-address", address=f"tcp://127.0.0.1:{free_port()}", timeout=2)
    with pytest.raises(ClusterError) as err:
        with open_cluster(cfg):
            pass
    msg = str(err.value)
    assert isinstance(err.value, ConfigError) and "\n" not in msg
    assert msg.startswith(f"cluster.address: no Dask scheduler answered at {cfg.address} within 2 s")


def test_dask_address_needs_an_address():
    with pytest.raises(ConfigError, match="cluster.type 'dask-address' needs cluster.address"):
        load_cluster_config({"type": "dask-address"})


# ------------------------------------------------------------------------- facility back-ends
def test_importing_the_factory_imports_no_facility_package():
    code = ("import sys, lhcad.cluster, lhcad.config; "
            "print(sorted(m for m in ('dask_gateway', 'dask_jobqueue', 'dask_kubernetes', 'kopf', 'kr8s', "
            "'distributed', 'coffea') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("system,expected", [
    ("htcondor", ["#!/usr/bin/env condor_submit", "MY.DaskWorkerCores = 2", "MY.DaskWorkerMemory = 8589934592",
                  "MY.DaskWorkerDisk = 4294967296", '+JobFlavour = "workday"', "--nthreads 2",
                  "--memory-limit 8.00GiB", "Queue"]),
    ("slurm", ["#!/usr/bin/env bash", "#SBATCH --cpus-per-task=2", "#SBATCH --mem=8G", "#SBATCH -t 01:00:00",
               "--nthreads 2", "--memory-limit 8.00GiB"]),
])
def test_jobqueue_job_script_renders(system, expected):
    extra = {"job_extra_directives": {"+JobFlavour": '"workday"'}} if system == "htcondor" else {"walltime": "01:00:00"}
    cfg = ClusterConfig(type="dask-jobqueue", jobqueue_system=system, threads_per_worker=2,
                        jobqueue_options={"memory": "8GiB", "cores": 2, **extra})
    cluster = _jobqueue_cluster(cfg)
    try:
        script = cluster.job_script()
    finally:
        cluster.close()
    for text in expected:
        assert text in script, (text, script)
    assert "-m distributed.cli.dask_worker tcp://" in script
    assert cluster.scheduler_address.split(":")[-1] in script  # workers are told where to connect


def test_jobqueue_example_config_renders_its_htcondor_script():
    cfg = load(REPO / "configs" / "jobqueue.yaml").cluster
    cluster = _jobqueue_cluster(cfg)
    try:
        script = cluster.job_script()
    finally:
        cluster.close()
    assert '+JobFlavour = "workday"' in script and "MY.DaskWorkerCores = 2" in script
    assert "--lifetime 23h" in script and "/shared/lhcad/logs" in script


def test_jobqueue_without_the_batch_system_fails_with_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no condor_submit / sbatch here
    for system, command in [("htcondor", "condor_submit"), ("slurm", "sbatch")]:
        cfg = ClusterConfig(type="dask-jobqueue", jobqueue_system=system)
        with pytest.raises(ClusterError, match=f"cluster.jobqueue_system: '{system}' submits jobs with '{command}'"):
            with open_cluster(cfg):
                pass


def test_gateway_without_a_server_fails_with_one_line():
    address = f"http://127.0.0.1:{free_port()}"
    cfg = ClusterConfig(type="dask-gateway", gateway_address=address, timeout=5)
    with pytest.raises(ClusterError) as err:
        with open_cluster(cfg):
            pass
    msg = str(err.value)
    assert msg.startswith(f"cluster.gateway_address: cannot start a cluster at {address}: ") and "\n" not in msg


KUBE_SCRIPT = """
import os, sys
from lhcad.cluster import ClusterError, open_cluster
from lhcad.config import ClusterConfig
for kubeconfig in sys.argv[1:]:
    os.environ["KUBECONFIG"] = kubeconfig
    try:
        with open_cluster(ClusterConfig(type="dask-kubernetes", workers=1, timeout=5)):
            print("created?!")
    except ClusterError as exc:
        print(exc)
"""


def test_kubernetes_without_a_cluster_fails_with_one_line(tmp_path):
    """No kubeconfig at all, and a kubeconfig whose API server does not answer."""
    dead = tmp_path / "config"
    dead.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: dead\n"
        f"clusters: [{{name: dead, cluster: {{server: 'https://127.0.0.1:{free_port()}'}}}}]\n"
        "contexts: [{name: dead, context: {cluster: dead, user: u, namespace: default}}]\n"
        "users: [{name: u, user: {token: abc}}]\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("KUBERNETES_")} | {"HOME": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", KUBE_SCRIPT, str(tmp_path / "missing"), str(dead)],
                         capture_output=True, text=True, env=env, cwd=tmp_path, timeout=180)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 2, out.stdout
    for line in lines:
        assert line.startswith("cluster.type 'dask-kubernetes': cannot create KubeCluster 'lhcad': "), line
    assert "credentials" in lines[0].lower() or "config" in lines[0].lower(), lines[0]
    assert "connect" in lines[1].lower(), lines[1]
    # No traceback from dask-kubernetes' atexit reaper after the one-line error.
    assert "Traceback" not in out.stderr, out.stderr


# ------------------------------------------------------------------------------ example configs
@pytest.mark.parametrize("name", ["opendata", "gateway", "jobqueue", "kubernetes"])
def test_example_configs_validate(name):
    cfg = load(REPO / "configs" / f"{name}.yaml")
    expected = {"opendata": "dask-local", "gateway": "dask-gateway", "jobqueue": "dask-jobqueue",
                "kubernetes": "dask-kubernetes"}[name]
    assert cfg.cluster.type == expected
    if name in ("opendata", "gateway"):
        fileset = json.loads((REPO / cfg.process.dijet).read_text())
        files = [f for ds in fileset.values() for f in ds["files"]]
        assert files and all(f.startswith("root://eospublic.cern.ch//eos/opendata/cms/") for f in files)
        assert all(ds["files"][f] == "Events" for ds in fileset.values() for f in ds["files"])
        assert set(cfg.train.methods) <= {"cwola", "cathode"}  # real data: no truth labels
