"""The image the chart runs (Dockerfile at the repo root): static checks, since it cannot be built here.

The build context must contain every package directory that pyproject maps into ``lhcad``, the
image must install torch pinned from a wheel index before the project, run as the non-root user
the chart's pods require, and have ``lhcad`` as entrypoint (the chart calls ``lhcad run`` and
``dask scheduler`` / ``dask worker``).
"""

from __future__ import annotations

import fnmatch
import re
import shlex
import tomllib
from pathlib import Path

import helm_python as helm
import yaml

REPO = Path(__file__).resolve().parents[1]


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs of the Dockerfile, continuation lines joined."""
    text = re.sub(r"\\\n", " ", (REPO / "Dockerfile").read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def dockerignored(path: str) -> bool:
    patterns = [p.strip() for p in (REPO / ".dockerignore").read_text().splitlines()
                if p.strip() and not p.startswith("#")]
    parts = Path(path).parts
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    anywhere = ["/".join(parts[j: i + 1]) for i in range(len(parts)) for j in range(i + 1)]
    for pattern in patterns:  # Docker semantics: relative to the context root; "**/" = any depth
        if pattern.startswith("**/"):
            if any(fnmatch.fnmatch(p, pattern[3:]) for p in anywhere):
                return True
        elif any(fnmatch.fnmatch(p, pattern.lstrip("/")) for p in prefixes):
            return True
    return False


def test_dockerfile_base_torch_and_install_order():
    ins = instructions()
    assert ins[0] == ("FROM", "python:3.11-slim")
    args = dict(a.split("=", 1) for k, a in ins if k == "ARG")
    assert args["TORCH_VERSION"] == "2.13.0"
    assert args["TORCH_INDEX"] == "https://download.pytorch.org/whl/cpu"
    runs = [a for k, a in ins if k == "RUN"]
    torch_at = next(i for i, r in enumerate(runs) if '"torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX}"' in r)
    project_at = next(i for i, r in enumerate(runs) if 'pip install ".[${EXTRAS}]"' in r)
    assert torch_at < project_at  # torch first, so the project's torch>=2.4 is already satisfied
    extras = set(args["EXTRAS"].split(","))
    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert extras <= set(declared) and "k8s" in extras  # dask-kubernetes etc. for the chart's pods


def test_dockerfile_runs_lhcad_as_the_charts_non_root_user():
    ins = instructions()
    user = [a for k, a in ins if k == "USER"]
    assert user == ["1000:1000"]
    assert ins[-2] == ("ENTRYPOINT", '["lhcad"]') and ins[-1] == ("CMD", '["--help"]')
    values = yaml.safe_load((REPO / "charts" / "lhcad" / "values.yaml").read_text())
    ctx = values["podSecurityContext"]
    assert (ctx["runAsUser"], ctx["runAsGroup"], ctx["runAsNonRoot"]) == (1000, 1000, True)
    # Every container the chart starts calls a program the image installs (lhcad or dask).
    with helm.Chart.load(REPO / "charts" / "lhcad") as chart:
        for vals in ({}, {"operator": {"enabled": False}}):
            for text in chart.render(vals, name="x", namespace="y").values():
                for cmd in re.findall(r"command: \[(.*?)\]", text):
                    assert shlex.split(cmd.replace(",", " "))[0] in ("lhcad", "dask")


def test_build_context_has_every_package_directory():
    ins = instructions()
    assert ("COPY", ". .") in ins
    tool = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    needed = {"pyproject.toml", "README.md", *tool["package-dir"].values()}
    for path in sorted(needed):
        assert (REPO / path).exists(), path
        assert not dockerignored(path), f"{path} is excluded by .dockerignore but needed by pip install"
    for heavy in (".venv", ".git", "results", "lhcad.egg-info", "processors/__pycache__"):
        assert dockerignored(heavy), heavy
