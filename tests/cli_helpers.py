"""Helpers shared by the test modules (pytest puts this folder on ``sys.path``)."""

from __future__ import annotations

from lhcad.cli import main


def run_cli(args: list[str]) -> int:
    """Run ``lhcad ARGS`` in-process and return its exit code (typer exits 0 on success)."""
    try:
        main(args)
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0
