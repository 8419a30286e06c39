"""The stage subpackages import from a built, non-editable wheel (setuptools package-dir mapping)."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile


def test_wheel_contains_and_imports_stage_packages(repo_root, tmp_path):
    wheel_dir = tmp_path / "wheel"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(wheel_dir), str(repo_root)],
        check=True, cwd=tmp_path,
    )
    (wheel,) = wheel_dir.glob("lhcad-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for pkg in ("processors", "models", "stats", "deploy", "generate", "configs"):
        assert f"lhcad/{pkg}/__init__.py" in names, pkg
    assert "lhcad/configs/demo.yaml" in names

    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
        check=True,
    )
    code = (
        "import lhcad, lhcad.processors, lhcad.models, lhcad.stats, lhcad.deploy; "
        "from lhcad.config import demo_config_path; "
        "print(lhcad.__file__); print(demo_config_path().is_file())"
    )
    env = {**os.environ, "PYTHONPATH": str(target)}
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True,
                         cwd=tmp_path, env=env).stdout.split()
    assert out[0].startswith(str(target)), out  # imported from the wheel, not the source tree
    assert out[1] == "True"
