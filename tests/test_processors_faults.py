"""Fault handling of the processors: bad inputs, kill-and-resume (a real SIGKILL), idempotent parts."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import uproot

from lhcad import store
from lhcad.cli import main
from lhcad.config import ConfigError
from lhcad.processors import parts
from lhcad.processors.runner import process
from lhcad.processors.samples import write_nanoaod

from test_processors import assert_same_store


@pytest.fixture(scope="module")
def bad_inputs(tmp_path_factory) -> dict:
    d = tmp_path_factory.mktemp("bad")
    good = write_nanoaod(d / "good.root", 2000, seed=11)
    raw = Path(good).read_bytes()
    (d / "truncated.root").write_bytes(raw[: len(raw) // 10])
    corrupt = bytearray(raw)
    corrupt[len(raw) // 8: len(raw) // 2] = bytes(len(raw) // 2 - len(raw) // 8)
    (d / "corrupt.root").write_bytes(bytes(corrupt))
    files = {
        "good": good,
        "truncated": str(d / "truncated.root"),
        "corrupt": str(d / "corrupt.root"),
        "wrongtree": write_nanoaod(d / "wrongtree.root", 300, seed=12, treename="Tree"),
        "empty": write_nanoaod(d / "empty.root", 0, seed=13),
        "notau2": write_nanoaod(d / "notau2.root", 700, seed=14, drop=("FatJet_tau2",)),
        "missing": str(d / "missing.root"),
    }
    return files


def _readable_entries(path: str) -> int | None:
    try:
        return uproot.open(path)["Events"].num_entries
    except Exception:  # noqa: BLE001 - unreadable is what we are probing for
        return None


def test_skipbadfiles_records_everything(bad_inputs, tmp_path):
    fileset = {"data": {"files": {f: "Events" for f in bad_inputs.values()}}}
    s = process("dijet", fileset, str(tmp_path / "s.zarr"), chunksize=400, skipbadfiles=True)
    readable = sum(n for f in bad_inputs.values() if (n := _readable_entries(f)) is not None)
    assert s["events_processed"] + s["events_skipped"] == readable == s["events_in_readable"]
    assert s["events_processed"] == 2000  # only the good file survives
    reasons = "\n".join(r["reason"] for r in s["skipped"])
    for name in ("truncated", "corrupt", "wrongtree", "empty", "notau2", "missing"):
        assert f"{name}.root" in reasons, name
    assert "FatJet_tau2" in reasons and "no tree 'Events'" in reasons and "not found" in reasons
    man = store.read_manifest(str(tmp_path / "s.zarr"), "dijet")
    statuses = {}
    for c in man["chunks"]:
        statuses.setdefault(Path(c["file"]).stem, set()).add(c["status"])
    assert statuses["good"] == {"done"} and statuses["empty"] == {"empty"}
    assert all(statuses[n] == {"skipped"} for n in ("truncated", "corrupt", "wrongtree", "notau2", "missing"))
    # the good file's rows equal a run on the good file alone
    alone = process("dijet", {"data": [bad_inputs["good"]]}, str(tmp_path / "alone.zarr"), chunksize=400)
    assert alone["rows"] == s["rows"] > 0
    np.testing.assert_array_equal(store.read_columns(str(tmp_path / "s.zarr"), "dijet", ["mjj"])["mjj"],
                                  store.read_columns(str(tmp_path / "alone.zarr"), "dijet", ["mjj"])["mjj"])


@pytest.mark.parametrize("name", ["truncated", "corrupt", "wrongtree", "notau2", "missing"])
def test_bad_input_without_skip_is_one_clear_error(name, bad_inputs, tmp_path, capsys):
    fs = tmp_path / "fs.json"
    fs.write_text(json.dumps({"data": {"files": {bad_inputs["good"]: "Events", bad_inputs[name]: "Events"}}}))
    with pytest.raises(SystemExit) as exc:
        main(["-q", "process", "dijet", "--fileset", str(fs), "--out", str(tmp_path / "s.zarr"), "--chunksize", "1000"])
    assert exc.value.code == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(err) == 1 and f"{name}.root" in err[0], err


def test_kill_and_resume_gives_the_clean_store(tmp_path):
    files = [write_nanoaod(tmp_path / f"k{i}.root", 1200, seed=20 + i, run=1 + i) for i in range(2)]
    fs = tmp_path / "fs.json"
    fs.write_text(json.dumps({"data": {"files": {f: "Events" for f in files}}}))
    clean = tmp_path / "clean.zarr"
    ref = process("dijet", str(fs), str(clean), chunksize=200)
    out = tmp_path / "killed.zarr"
    cmd = [sys.executable, "-m", "lhcad.cli", "-q", "process", "dijet", "--fileset", str(fs), "--out", str(out),
           "--chunksize", "200"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 240
        while len(list(out.glob("_parts/*/*.part"))) < 3:
            assert proc.poll() is None, "the run finished before it could be killed"
            assert time.time() < deadline, "no parts appeared"
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    committed = len(list(out.glob("_parts/*/*.part")))
    assert 3 <= committed < ref["chunks"]
    assert not (out / "dijet").exists() or store.n_rows(str(out), "dijet") != ref["rows"]
    resumed = process("dijet", str(fs), str(out), chunksize=200)
    assert resumed["chunks_reused"] >= committed and resumed["chunks_run"] == ref["chunks"] - resumed["chunks_reused"]
    assert_same_store(clean, out)


def test_parts_are_idempotent_and_atomic(tmp_path):
    root = str(tmp_path / "_parts" / "t")
    a = {"x": np.arange(5)}
    assert parts.write_part(root, "k", a, {"key": "k", "n": 5}) is True
    assert parts.write_part(root, "k", {"x": np.zeros(5)}, {"key": "k", "n": 0}) is False  # first commit wins
    (tmp_path / "_parts" / "t" / "j.part.tmp-123").write_bytes(b"half-written")  # a killed writer's leftover
    assert parts.part_entries(root) == {"k": {"key": "k", "n": 5}}
    np.testing.assert_array_equal(parts.read_part(root, "k")["x"], np.arange(5))
    # mixed dtypes, (N, 19, 3) rows, empty arrays; row slices read only those rows
    cube = np.arange(7 * 19 * 3, dtype=np.float32).reshape(7, 19, 3)
    assert parts.write_part(root, "m", {"p": cube, "e": np.arange(7, dtype=np.uint8), "z": np.zeros(0)}, {"key": "m"})
    got = parts.read_part(root, "m", ["p", "e"], rows=slice(2, 5))
    np.testing.assert_array_equal(got["p"], cube[2:5])
    np.testing.assert_array_equal(got["e"], np.arange(2, 5, dtype=np.uint8))
    assert parts.read_part(root, "m", ["z"])["z"].shape == (0,)
    assert list(parts.part_layout(root, "m")) == ["p", "e", "z"]
    e = np.arange(4.0)
    assert parts.write_part(root, "d", {"a": e, "b": e, "c": e + 1}, {"key": "d"})  # b: stored once
    got = parts.read_part(root, "d")
    np.testing.assert_array_equal(got["b"], e)
    np.testing.assert_array_equal(got["c"], e + 1)
    assert (tmp_path / "_parts" / "t" / "d.part").stat().st_size < 3 * 64 + 1024
    with pytest.raises(ConfigError, match="fileset file not found"):
        process("dijet", str(tmp_path / "none.json"), str(tmp_path / "s.zarr"))


def test_pipeline_stage_writes_store_and_figures(tmp_path):
    from lhcad.config import PipelineConfig
    from lhcad.pipeline import RunContext
    from lhcad.processors.runner import pipeline_stage

    f = write_nanoaod(tmp_path / "in.root", 1200, seed=31)
    (tmp_path / "fs.json").write_text(json.dumps({"data": [f]}))
    cfg = PipelineConfig.model_validate({
        "store": str(tmp_path / "store.zarr"), "workdir": str(tmp_path / "work"),
        "cluster": {"type": "iterative"},
        "process": {"dijet": str(tmp_path / "fs.json"), "lumi": str(tmp_path / "fs.json"), "l1": None,
                    "chunksize": 500},
    })
    res = pipeline_stage(cfg, RunContext(cfg, "<test>"))
    assert res["figures"]["dijet_events_processed"] == res["figures"]["lumi_events_processed"] == 1200
    assert res["figures"]["dijet_rows"] == store.n_rows(cfg.store, "dijet") > 0
    assert json.loads(Path(res["artefacts"]["dijet_summary"]).read_text())["chunks"] >= 2
    assert "l1_rows" not in res["figures"]
    missing = cfg.model_copy(update={"process": cfg.process.model_copy(update={"dijet": "generated", "lumi": None})})
    with pytest.raises(ConfigError, match="generated fileset not found"):
        pipeline_stage(missing, RunContext(missing, "<test>"))


def test_consolidation_chunk_encoding_equals_zarr_setitem(tmp_path):
    """Chunks encoded by the consolidation (lhcad.processors.consolidate._set_rows) read back as
    zarr's own ``setitem`` writes them: 1-D and (N, 19, 3) rows, int and float, a padded edge chunk."""
    import zarr

    from lhcad.processors import consolidate

    rng = np.random.default_rng(0)
    for shape, dtype in (((1000,), "f4"), ((1000, 19, 3), "f4"), ((1000,), "i8"), ((1000,), "i4")):
        g = zarr.open_group(str(tmp_path / "e.zarr"), mode="w")
        ours, ref = (g.create_array(n, shape=shape, dtype=dtype, chunks=(256, *shape[1:]),
                                    **store.column_array_options()) for n in ("ours", "ref"))
        values = (rng.normal(size=shape) * 1000).astype(dtype)
        for lo in range(0, 1000, 512):
            hi = min(1000, lo + 512)
            assert consolidate._encode_chunks(ours.async_array, values[lo:hi], lo, hi) is not None
            consolidate._set_rows([(ours.async_array, values[lo:hi])], lo, hi)
        ref[:] = values
        back = zarr.open_group(str(tmp_path / "e.zarr"), mode="r")
        np.testing.assert_array_equal(back["ours"][...], values)
        np.testing.assert_array_equal(back["ours"][...], back["ref"][...])
        np.testing.assert_array_equal(back["ours"][700:900], values[700:900])
    # another codec chain: zarr's own path
    other = zarr.open_group(str(tmp_path / "o.zarr"), mode="w").create_array("x", shape=(10,), dtype="f4", chunks=(4,))
    assert consolidate._encode_chunks(other.async_array, np.ones(8, np.float32), 0, 8) is None


def test_consolidation_plans_copied_columns_once(tmp_path):
    """A column every part stores as a copy of another is planned as such (read and encoded once,
    in its source's task); one part with distinct values turns that off."""
    from lhcad.processors import consolidate

    root = str(tmp_path / "_parts" / "t")
    e = np.arange(6.0)
    parts.write_part(root, "p1", {"a": e, "b": e, "c": e + 1}, {"key": "p1"})
    parts.write_part(root, "p2", {"a": e, "b": e, "c": e}, {"key": "p2"})
    entries = [{"key": k, "dataset": "d", "status": "done", "events_out": 6} for k in ("p1", "p2")]
    _n, arrays, tasks = consolidate.plan_rows(root, entries, {"d": 0})
    assert arrays["b"].get("same_as") == "a" and "same_as" not in arrays["c"]
    assert any({"a", "b"} <= set(names) for *_, names in tasks)
    parts.write_part(root, "p3", {"a": e, "b": e + 2, "c": e}, {"key": "p3"})
    entries.append({"key": "p3", "dataset": "d", "status": "done", "events_out": 6})
    _n, arrays, _t = consolidate.plan_rows(root, entries, {"d": 0})
    assert "same_as" not in arrays["b"]
