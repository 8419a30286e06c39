"""Logging and progress bars shared by every lhcad command.

One logger per module (``logging.getLogger(__name__)``); :func:`setup` installs a rich handler once.
:func:`progress` returns a rich progress bar that stays quiet when output is not a terminal or when
``--quiet`` was given.
"""

from __future__ import annotations

import logging

from rich.console import Console
from rich.logging import RichHandler
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

console = Console(stderr=True)
_state = {"quiet": False}


def setup(verbose: int = 0, quiet: bool = False) -> None:
    """Configure the ``lhcad`` logger: WARNING when quiet, INFO by default, DEBUG with ``-v``."""
    level = logging.WARNING if quiet else (logging.DEBUG if verbose else logging.INFO)
    _state["quiet"] = quiet
    root = logging.getLogger("lhcad")
    root.setLevel(level)
    if not any(isinstance(h, RichHandler) for h in root.handlers):
        root.addHandler(RichHandler(console=console, show_path=False, rich_tracebacks=False))
    root.propagate = False


def progress(**kwargs) -> Progress:
    """A rich progress bar (disabled with ``--quiet``)."""
    disable = kwargs.pop("disable", False) or _state["quiet"]  # pop first: `or` short-circuits
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=disable,
        transient=kwargs.pop("transient", False),
        **kwargs,
    )


def progress_map(fn, items, desc: str = "tasks") -> list:
    """``[fn(x) for x in items]`` in this process, with a progress bar (the no-cluster path of a stage)."""
    items = list(items)
    out = []
    with progress() as bar:
        task = bar.add_task(desc, total=len(items))
        for item in items:
            out.append(fn(item))
            bar.advance(task)
    return out
