"""The command line: --help everywhere and the dry-run plan."""

from __future__ import annotations

import pytest
import typer
from typer.testing import CliRunner

from lhcad import cli, pipeline
from lhcad.config import STAGES

runner = CliRunner()


def _all_commands(app: typer.Typer, prefix=()):
    group = typer.main.get_group(app)

    def walk(cmd, path):
        yield path
        for name, sub in getattr(cmd, "commands", {}).items():
            yield from walk(sub, (*path, name))

    yield from walk(group, prefix)


def test_top_level_help_lists_registered_groups():
    result = runner.invoke(cli.app, ["--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    for name, _, _ in cli._GROUPS:
        assert name in result.output
    assert "run" in result.output


@pytest.mark.parametrize("path", list(_all_commands(cli.app)), ids=lambda p: " ".join(p) or "lhcad")
def test_every_command_has_help(path):
    result = runner.invoke(cli.app, [*path, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output


def test_version():
    result = runner.invoke(cli.app, ["--version"])
    assert result.exit_code == 0
    assert result.output.startswith("lhcad ")


def test_dry_run_prints_plan_in_stage_order(repo_root):
    result = runner.invoke(cli.app, ["run", str(repo_root / "configs" / "demo.yaml"), "--dry-run"],
                           env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    out = result.output
    positions = [out.index(f" {s} ") for s in STAGES if f" {s} " in out]
    assert positions == sorted(positions)
    assert "plan" in out


def test_plan_marks_unavailable_stages(tmp_path):
    from lhcad.config import PipelineConfig

    rows = pipeline.plan(PipelineConfig(stages=list(STAGES)))
    assert [r["stage"] for r in rows] == list(STAGES)
    for r in rows:
        assert r["available"] == (r["stage"] in pipeline.STAGE_FUNCTIONS)
