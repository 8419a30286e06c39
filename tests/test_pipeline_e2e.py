"""``lhcad run`` end to end with the real stages on ``configs/small.yaml``.

The small config generates a tiny dijet sample with an injected W', processes it with coffea into
the Zarr store, trains CWoLa (a few boosted-tree iterations, folds × members as tasks), scores, runs
a two-window bump hunt and one limit, and renders the report. One clean in-process run is the
reference; the other tests must reproduce its figures exactly (wall-clock figures aside):

* a run killed with SIGKILL during training and rerun resumes (finished stages skipped, finished
  per-task model artefacts reused) and ends with the clean run's summary;
* the same config pointed at a real ``dask scheduler`` with two ``dask worker`` processes on
  loopback (``cluster.type: dask-address``), with its Zarr store and workdir in an S3 bucket (moto's
  S3 server on loopback), runs its work on those workers and keeps everything in the bucket.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from lhcad import pipeline
from lhcad.config import PipelineConfig, validate

from test_cluster import free_port, loopback_dask

REPO = Path(__file__).resolve().parents[1]
SMALL = REPO / "configs" / "small.yaml"


def small_config(workdir: Path, store: str | None = None, **cluster) -> PipelineConfig:
    """configs/small.yaml with its results under ``workdir`` (and the store at ``store``)."""
    data = yaml.safe_load(SMALL.read_text())
    data["workdir"] = str(workdir)
    data["store"] = store or str(workdir / "store.zarr")
    data["cluster"].update(cluster)
    return validate(data, str(SMALL))


def write_config(cfg: PipelineConfig, path: Path) -> Path:
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
    return path


def log_events(workdir: Path) -> list[tuple[str, str]]:
    """(stage, event) of every line of the run log."""
    return [tuple(line.split()[1:3]) for line in (workdir / "run.log").read_text().splitlines()]


@pytest.fixture(scope="module")
def clean_run(tmp_path_factory):
    """The reference: configs/small.yaml run once, in-process, from nothing."""
    workdir = tmp_path_factory.mktemp("clean") / "results"
    cfg = small_config(workdir)
    summary = pipeline.run(cfg, str(SMALL))
    assert json.loads((workdir / "summary.json").read_text())["stages"].keys() == summary["stages"].keys()
    return summary


def test_small_config_runs_every_configured_stage(clean_run):
    stages = clean_run["stages"]
    assert list(stages) == ["generate", "process", "train", "score", "stats", "report"]
    assert stages["generate"]["figures"]["dijet_data_signal"] == 300
    assert stages["process"]["figures"]["dijet_events_processed"] == 10_300
    assert 0 < stages["process"]["figures"]["dijet_rows"] < 10_300
    # CWoLa finds the injected W' in the SR: SIC well above 1 on the data's truth labels
    assert stages["score"]["figures"]["cwola__3300_3700"]["max_sic"] > 1.5
    assert Path(stages["report"]["artefacts"]["report"]).is_file()
    # the wall-clock figures are what `reproducible` leaves out
    assert "train_wall_s" in stages["train"]["figures"]
    assert "train_wall_s" not in pipeline.reproducible(clean_run)["train"]["figures"]


def test_run_killed_during_training_resumes_to_the_clean_summary(clean_run, tmp_path):
    workdir = tmp_path / "results"
    cfg = small_config(workdir)
    path = write_config(cfg, tmp_path / "small.yaml")
    lhcad = str(Path(sys.executable).with_name("lhcad"))
    with (tmp_path / "killed.log").open("w") as out:
        # own session: SIGKILL to the whole process group, as a killed terminal or pod would
        proc = subprocess.Popen([lhcad, "-q", "run", str(path)], stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.monotonic() + 300
    try:
        # wait until the train stage has written its first per-task model, then kill
        while not list((workdir / "train").rglob("f*_m*.pt")):
            assert proc.poll() is None, (tmp_path / "killed.log").read_text()
            assert time.monotonic() < deadline, "train stage did not start"
            time.sleep(0.02)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    stages_dir = workdir / ".stages"
    assert sorted(p.stem for p in stages_dir.glob("*.json")) == ["generate", "process"]
    assert log_events(workdir)[-1] == ("train", "started")
    finished = {p: p.stat().st_mtime_ns for p in (workdir / "train").rglob("f*_m*.pt")}
    assert 1 <= len(finished) < 4  # 2 folds x 2 members: killed part-way through training
    markers = {p: p.stat().st_mtime_ns for p in stages_dir.glob("*.json")}

    summary = pipeline.run(small_config(workdir), str(path))

    events = log_events(workdir)
    assert events.count(("generate", "done")) == events.count(("process", "done")) == 1
    assert ("generate", "skipped") in events and ("process", "skipped") in events
    assert [e for e in events if e[1] == "done"][-4:] == [
        ("train", "done"), ("score", "done"), ("stats", "done"), ("report", "done")]
    # finished stages and finished per-task models are reused, not recomputed
    for marker, mtime in markers.items():
        assert marker.stat().st_mtime_ns == mtime, marker
    for model, mtime in finished.items():
        assert model.stat().st_mtime_ns == mtime, model
    assert len(list((workdir / "train").rglob("f*_m*.pt"))) == 4
    assert pipeline.reproducible(summary) == pipeline.reproducible(clean_run)
    on_disk = json.loads((workdir / "summary.json").read_text())
    assert pipeline.reproducible(on_disk) == pipeline.reproducible(clean_run)


# ------------------------------------------------------------------ the store at an s3:// URL
@pytest.fixture(scope="module")
def s3_bucket():
    """A real S3 API (moto's server) on loopback with one bucket; credentials and endpoint come
    from the standard AWS variables, as on a facility (``AWS_ENDPOINT_URL_S3`` for non-AWS S3)."""
    import s3fs
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        with pytest.MonkeyPatch.context() as mp:
            for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                               "AWS_DEFAULT_REGION": "us-east-1",
                               "AWS_ENDPOINT_URL_S3": f"http://127.0.0.1:{port}"}.items():
                mp.setenv(key, value)
            fs = s3fs.S3FileSystem(skip_instance_cache=True)
            fs.mkdir("lhcad-test")
            yield fs, "lhcad-test"
    finally:
        server.stop()


@pytest.fixture(scope="module")
def facility(s3_bucket, tmp_path_factory):
    """A real ``dask scheduler`` + two ``dask worker`` processes on loopback, started after the S3
    variables are set, so the workers reach the bucket as the driver does."""
    with loopback_dask(tmp_path_factory.mktemp("dask")) as address:
        yield address


def test_on_an_external_scheduler_with_store_and_workdir_in_s3(s3_bucket, facility, clean_run, tmp_path,
                                                               monkeypatch):
    """The chart's set-up, on loopback: ``cluster.type: dask-address`` and the store and workdir at
    s3:// URLs. The processors' workers write their chunk parts into the bucket, the driver
    consolidates them into the bucket's Zarr store, training / scoring / stats tasks read it."""
    import shutil

    import numpy as np
    from distributed import Client

    from lhcad.store import read_columns, read_scores

    fs, bucket = s3_bucket
    store, workdir = f"s3://{bucket}/small/store.zarr", f"s3://{bucket}/small/results"
    monkeypatch.chdir(tmp_path)  # a URL mistaken for a relative path would appear here
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # the workdir's local working copy
    data = yaml.safe_load(SMALL.read_text())
    data.update(store=store, workdir=workdir)
    data["cluster"].update(type="dask-address", address=facility, timeout=30)
    cfg = validate(data, str(SMALL))
    with Client(facility, timeout=30) as client:
        before = client.run(lambda dask_worker: dask_worker.state.executed_count)

    summary = pipeline.run(cfg, str(SMALL))

    # the work ran on the two external workers: both executed tasks of this run, and the coffea
    # chunks (the processor), training, scoring, scan windows and limits all went through them
    with Client(facility, timeout=30) as client:
        after = client.run(lambda dask_worker: dask_worker.state.executed_count)
        prefixes = client.run_on_scheduler(lambda dask_scheduler: sorted(dask_scheduler.task_prefixes))
    assert len(after) == 2
    assert all(after[w] > before.get(w, 0) for w in after), (before, after)
    assert {"DijetProcessor", "fit_task", "score_task", "analyse_window", "limit_for_mass"} <= set(prefixes)

    # the store is in the bucket (and nowhere local), parts consolidated and removed
    objects = fs.find(f"{bucket}/small")
    prefix = f"{bucket}/small/store.zarr/dijet"
    assert f"{prefix}/mjj/zarr.json" in objects
    assert any(o.startswith(f"{prefix}/scores/cwola__3300_3700/c/") for o in objects)
    assert not any("/_parts/" in o for o in objects)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache"]
    assert summary["stages"]["process"]["artefacts"]["store"] == store
    # same figures as the in-process run with everything local, and the same store content
    assert pipeline.reproducible(summary) == pipeline.reproducible(clean_run)
    local = clean_run["store"]
    for name in ("mjj", "mj1", "tau21_j2", "truth_label"):
        np.testing.assert_array_equal(read_columns(store, "dijet", [name])[name],
                                      read_columns(local, "dijet", [name])[name])
    np.testing.assert_array_equal(read_scores(store, "dijet", "cwola__3300_3700"),
                                  read_scores(local, "dijet", "cwola__3300_3700"))
    # every artefact is in the bucket, and the summary's paths point there
    results = f"{bucket}/small/results"
    for name in ("summary.json", "report.html", "run.log", ".stages/train.json", "stats/scan.json",
                 "score/figures.json", "generated/dijet/fileset.json"):
        assert f"{results}/{name}" in objects, name
    assert any(o.startswith(f"{results}/train/3300_3700/cwola-") and o.endswith(".pt") for o in objects)
    assert summary["stages"]["report"]["artefacts"]["report"] == f"{workdir}/report.html"
    assert json.loads(fs.cat(f"{results}/summary.json")) == json.loads(json.dumps(summary, default=str))

    # a fresh machine (no local working copy) resumes from the bucket: every stage is done
    shutil.rmtree(tmp_path / "cache")
    assert all(row["done"] for row in pipeline.plan(cfg))
    again = pipeline.run(cfg, str(SMALL))
    assert pipeline.reproducible(again) == pipeline.reproducible(summary)
    events = fs.cat(f"{results}/run.log").decode().split("\n")
    assert sum(" skipped " in e for e in events) == 6


def test_workdir_url_that_cannot_be_read_is_one_clear_error(tmp_path, capsys):
    from lhcad.cli import main

    data = yaml.safe_load(SMALL.read_text())
    data.update(workdir="nosuchfs://bucket/results", store=str(tmp_path / "store.zarr"))
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(SystemExit) as exit_:
        main(["run", str(path)])
    assert exit_.value.code == 2
    err = capsys.readouterr()
    text = " ".join((err.out + err.err).split())
    assert "workdir: cannot read nosuchfs://bucket/results" in text and "nosuchfs" in text
