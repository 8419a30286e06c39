"""Config validation: unknown keys and bad values fail with one line naming the key path."""

from __future__ import annotations

import subprocess
import sys

import pytest

from lhcad import config
from lhcad.cli import main


def write(tmp_path, text: str):
    path = tmp_path / "cfg.yaml"
    path.write_text(text)
    return path


def test_demo_config_is_valid(repo_root):
    cfg = config.load(repo_root / "configs" / "demo.yaml")
    assert cfg.cluster.type == "dask-local"
    assert cfg.generate.dijet.signal == "wprime_xy"


def test_packaged_demo_config_matches_repo(repo_root):
    assert config.demo_config_path().read_text() == (repo_root / "configs" / "demo.yaml").read_text()


def test_misspelt_nested_key_names_the_key_path(tmp_path):
    path = write(tmp_path, "generate:\n  dijet:\n    evnts: 10\n")
    with pytest.raises(config.ConfigError) as err:
        config.load(path)
    msg = str(err.value)
    assert msg.count("\n") == 0
    assert "generate.dijet.evnts: unknown key" in msg
    assert "events" in msg  # the allowed keys are listed
    assert str(path) in msg


def test_bad_value_names_key_and_value(tmp_path):
    path = write(tmp_path, "cluster:\n  type: dask-lokal\n")
    with pytest.raises(config.ConfigError, match=r"cluster\.type: .*'dask-lokal'"):
        config.load(path)


def test_negative_count_rejected(tmp_path):
    path = write(tmp_path, "generate:\n  dijet:\n    events: -5\n")
    with pytest.raises(config.ConfigError, match=r"generate\.dijet\.events: Input should be greater than 0"):
        config.load(path)


def test_dask_address_requires_address(tmp_path):
    path = write(tmp_path, "cluster:\n  type: dask-address\n")
    with pytest.raises(config.ConfigError, match="cluster.address"):
        config.load(path)


def test_invalid_yaml_and_missing_file(tmp_path):
    path = write(tmp_path, "cluster: [unclosed\n")
    with pytest.raises(config.ConfigError, match="invalid YAML"):
        config.load(path)
    with pytest.raises(config.ConfigError, match="file not found"):
        config.load(tmp_path / "nope.yaml")
    with pytest.raises(config.ConfigError, match="expected a mapping"):
        config.load(write(tmp_path, "- a\n- b\n"))


def test_cli_misspelt_key_exit_code_2_one_line(tmp_path):
    path = write(tmp_path, "stroe: x.zarr\n")
    proc = subprocess.run(
        [sys.executable, "-m", "lhcad.cli", "run", str(path), "--dry-run"],
        capture_output=True, text=True, env={"COLUMNS": "300", "PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 2
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert "stroe: unknown key" in lines[0]


def test_main_returns_exit_2_in_process(tmp_path, capsys):
    path = write(tmp_path, "stages: [generate, fly]\n")
    with pytest.raises(SystemExit) as exc:
        main(["run", str(path), "--dry-run"])
    assert exc.value.code == 2
    assert "stages.1" in capsys.readouterr().err
