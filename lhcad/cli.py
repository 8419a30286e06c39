"""The ``lhcad`` command line: a thin layer over the library, one sub-command group per stage.

Stage groups live next to their stage (``lhcad/generate/cli.py``, ``processors/cli.py``, ...) and
are registered in ``_GROUPS`` below when the stage lands; heavy imports (torch, coffea, tensorflow)
happen inside the commands, so ``lhcad --help`` stays fast.
"""

from __future__ import annotations

import importlib
import sys
from typing import Annotated

import typer

from lhcad import __version__
from lhcad import log as _log
from lhcad.config import ConfigError

app = typer.Typer(
    name="lhcad",
    help="Anomaly detection on CMS Run 2 NanoAOD: generate → process → train/score → stats → dqm → deploy → report.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

# (group name, module, attribute) — a stage appears here when it is implemented.
_GROUPS: list[tuple[str, str, str]] = [
    ("generate", "lhcad.generate.cli", "app"),
    ("import", "lhcad.importers.cli", "app"),
    ("process", "lhcad.processors.cli", "app"),
    ("train", "lhcad.models.cli", "train_app"),
    ("score", "lhcad.models.cli", "score_app"),
    ("stats", "lhcad.stats.cli", "app"),
    ("dqm", "lhcad.dqm.cli", "app"),
    ("l1", "lhcad.models.l1_cli", "app"),
    ("deploy", "lhcad.deploy.cli", "app"),
]
# (command name, module, function) — single commands at the top level.
_COMMANDS: list[tuple[str, str, str]] = [
    ("run", "lhcad.pipeline", "run_command"),
    ("report", "lhcad.report", "report_command"),
]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"lhcad {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    verbose: Annotated[int, typer.Option("--verbose", "-v", count=True, help="More log output (-v: debug).")] = 0,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only warnings and errors; no progress bars.")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    _log.setup(verbose=verbose, quiet=quiet)


for _name, _module, _attr in _GROUPS:
    app.add_typer(getattr(importlib.import_module(_module), _attr), name=_name)
for _name, _module, _attr in _COMMANDS:
    app.command(_name)(getattr(importlib.import_module(_module), _attr))


class UsageError(Exception):
    """A bad input the user can fix (file, key or value named in the message): exit code 2."""


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print one clear error line and return an Exit to raise."""
    _log.console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: user errors become one line on stderr and exit code 2."""
    try:
        app(args=argv, standalone_mode=True)
    except (ConfigError, UsageError) as exc:
        for line in str(exc).splitlines():
            _log.console.print(f"[bold red]error:[/] {line}", highlight=False, soft_wrap=True)
        sys.exit(2)


if __name__ == "__main__":
    # `python -m lhcad.cli`: stage modules raise lhcad.cli.UsageError, not __main__.UsageError,
    # so hand over to the imported module's entry point.
    from lhcad.cli import main as _entry

    _entry()
