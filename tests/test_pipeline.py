"""lhcad run: stages keyed by config hash — reruns skip finished stages, changes recompute dependents."""

from __future__ import annotations

import json

import pytest

from lhcad import pipeline
from lhcad.config import PipelineConfig

CALLS: list[str] = []


def fake_generate(cfg, ctx):
    CALLS.append("generate")
    return {"figures": {"events": cfg.generate.dijet.events}, "plots": [], "artefacts": {}}


def fake_process(cfg, ctx):
    CALLS.append("process")
    return {"figures": {"chunksize": cfg.process.chunksize}, "plots": [], "artefacts": {}}


def failing_process(cfg, ctx):
    raise RuntimeError("killed")


@pytest.fixture()
def stages(monkeypatch):
    CALLS.clear()
    monkeypatch.setitem(pipeline.STAGE_FUNCTIONS, "generate", "test_pipeline:fake_generate")
    monkeypatch.setitem(pipeline.STAGE_FUNCTIONS, "process", "test_pipeline:fake_process")


def config(tmp_path, **gen):
    return PipelineConfig(
        workdir=str(tmp_path / "results"), store=str(tmp_path / "store.zarr"),
        stages=["generate", "process", "report"],
        generate={"dijet": {"events": gen.get("events", 100)}},
    )


def test_rerun_skips_and_changed_config_recomputes_dependents(tmp_path, stages):
    cfg = config(tmp_path)
    summary = pipeline.run(cfg)
    assert CALLS == ["generate", "process"]
    assert (tmp_path / "results" / "report.html").is_file()
    assert json.loads((tmp_path / "results" / "summary.json").read_text())["stages"]["generate"]["figures"] == {"events": 100}

    assert all(r["done"] for r in pipeline.plan(cfg))
    pipeline.run(cfg)
    assert CALLS == ["generate", "process"]  # nothing recomputed

    cfg2 = config(tmp_path, events=200)
    assert [r["done"] for r in pipeline.plan(cfg2)] == [False, False, False]
    summary = pipeline.run(cfg2)
    assert CALLS == ["generate", "process"] * 2
    assert summary["stages"]["generate"]["figures"]["events"] == 200

    cfg3 = cfg2.model_copy(deep=True)
    cfg3.process.chunksize = 1000  # only process and what follows depend on it
    assert [r["done"] for r in pipeline.plan(cfg3)] == [True, False, False]


def test_killed_stage_reruns_and_earlier_ones_are_kept(tmp_path, stages, monkeypatch):
    cfg = config(tmp_path)
    monkeypatch.setitem(pipeline.STAGE_FUNCTIONS, "process", "test_pipeline:failing_process")
    with pytest.raises(RuntimeError, match="killed"):
        pipeline.run(cfg)
    assert CALLS == ["generate"]
    monkeypatch.setitem(pipeline.STAGE_FUNCTIONS, "process", "test_pipeline:fake_process")
    pipeline.run(cfg)
    assert CALLS == ["generate", "process"]


def test_unavailable_stage_is_a_config_error(tmp_path, monkeypatch):
    from lhcad.config import ConfigError

    monkeypatch.delitem(pipeline.STAGE_FUNCTIONS, "generate", raising=False)
    cfg = PipelineConfig(workdir=str(tmp_path), stages=["generate"])
    with pytest.raises(ConfigError, match="stages: generate not available"):
        pipeline.run(cfg, "x.yaml")
