"""``lhcad report``: one self-contained HTML page (figures embedded) from a run's ``summary.json``.

Each stage's result ``{"figures": {...}, "plots": [png, ...], "artefacts": {...}}`` becomes one
section (``<section id="stage-<name>">``): nested figure dicts become tables (e.g. ``max_sic`` per
method, ``tpr_at_fpr_1e-5`` per model × signal), PNG plots are embedded as base64 data URIs, and
artefacts are listed by path. The page loads nothing from the network.
"""

from __future__ import annotations

import base64
import html
import json
import logging
import math
from pathlib import Path
from typing import Annotated, Any

import typer

import lhcad
from lhcad.config import STAGES, ConfigError

log = logging.getLogger(__name__)

_CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:0;color:#1b1f24;background:#f6f7f9}
header{background:#0b3d91;color:#fff;padding:1.2em 2em}header h1{margin:0;font-size:1.6em}
nav{padding:.6em 2em;background:#e8ecf3;position:sticky;top:0}nav a{margin-right:1em;color:#0b3d91}
main{padding:1em 2em;max-width:1200px}section{background:#fff;border-radius:8px;padding:1em 1.5em;
margin:1em 0;box-shadow:0 1px 3px rgba(0,0,0,.08)}h2{margin-top:0;color:#0b3d91}
table{border-collapse:collapse;margin:.5em 0 1em}td,th{border:1px solid #d0d7de;padding:.25em .6em;
text-align:right;font-variant-numeric:tabular-nums}th{background:#f0f3f8}td.k,th.k{text-align:left}
figure{display:inline-block;margin:.5em;vertical-align:top}figure img{max-width:540px;border:1px solid #eee}
figcaption{font-size:.85em;color:#555;text-align:center}.muted{color:#777}
"""

_SCRIPT = """
window.__lhcadErrors = 0;
window.addEventListener('error', function(){ window.__lhcadErrors++;
  document.body.setAttribute('data-errors', String(window.__lhcadErrors)); });
document.addEventListener('DOMContentLoaded', function(){
  document.body.setAttribute('data-errors', String(window.__lhcadErrors));
  document.body.setAttribute('data-sections', String(document.querySelectorAll('section').length));
});
"""


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if value != 0 and (abs(value) >= 1e5 or abs(value) < 1e-3):
            return f"{value:.3e}"
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)) and len(value) > 12:
        return html.escape(f"[{len(value)} values]")
    return html.escape(str(value))


def _is_matrix(d: dict) -> bool:
    """A dict of dicts of scalars (e.g. method × signal) renders as one 2-D table."""
    return bool(d) and all(isinstance(v, dict) and v and
                           all(not isinstance(x, dict) for x in v.values()) for v in d.values())


def _table(figures: dict, title: str | None = None) -> str:
    parts = []
    scalars = {k: v for k, v in figures.items() if not isinstance(v, dict)}
    if scalars:
        rows = "".join(f"<tr><td class='k'>{html.escape(str(k))}</td><td>{_fmt(v)}</td></tr>"
                       for k, v in scalars.items())
        head = f"<caption>{html.escape(title)}</caption>" if title else ""
        parts.append(f"<table>{head}{rows}</table>")
    for key, sub in figures.items():
        if not isinstance(sub, dict):
            continue
        name = f"{title}.{key}" if title else str(key)
        if _is_matrix(sub):
            cols = sorted({c for v in sub.values() for c in v})
            header = "".join(f"<th>{html.escape(str(c))}</th>" for c in cols)
            body = "".join(
                f"<tr><th class='k'>{html.escape(str(r))}</th>"
                + "".join(f"<td>{_fmt(v.get(c, ''))}</td>" for c in cols) + "</tr>"
                for r, v in sub.items()
            )
            parts.append(f"<table><caption>{html.escape(name)}</caption>"
                         f"<tr><th class='k'></th>{header}</tr>{body}</table>")
        else:
            parts.append(_table(sub, name))
    return "".join(parts)


def _image(path: str) -> str:
    p = Path(path)
    try:
        data = base64.b64encode(p.read_bytes()).decode()
    except OSError:
        log.warning("report: plot %s not found, left out", path)
        return f"<p class='muted'>plot missing: {html.escape(str(path))}</p>"
    mime = "image/svg+xml" if p.suffix == ".svg" else "image/png"
    return (f"<figure><img alt='{html.escape(p.stem)}' src='data:{mime};base64,{data}'>"
            f"<figcaption>{html.escape(p.stem)}</figcaption></figure>")


def render(summary: dict) -> str:
    """The report page for a summary dict (as written by ``lhcad run``)."""
    stages = summary.get("stages", summary)
    order = [s for s in STAGES if s in stages and s != "report"]
    nav = "".join(f"<a href='#stage-{s}'>{s}</a>" for s in order)
    sections = []
    for stage in order:
        result = stages[stage] or {}
        body = _table(result.get("figures", {})) or "<p class='muted'>no figures</p>"
        plots = "".join(_image(p) for p in result.get("plots", []))
        arts = result.get("artefacts", {})
        art_html = ""
        if arts:
            items = "".join(f"<li><code>{html.escape(str(k))}</code>: {html.escape(str(v))}</li>"
                            for k, v in arts.items())
            art_html = f"<h3>Artefacts</h3><ul>{items}</ul>"
        wall = summary.get("stage_wall_s", {}).get(stage)
        wall_html = f"<p class='muted'>wall time {wall:.1f} s</p>" if isinstance(wall, (int, float)) else ""
        sections.append(f"<section id='stage-{stage}'><h2>{stage}</h2>{wall_html}{body}"
                        f"<div class='plots'>{plots}</div>{art_html}</section>")
    title = f"lhcad report — {html.escape(str(summary.get('config', '')))}"
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>{title}</title><style>{_CSS}</style><script>{_SCRIPT}</script></head><body>"
        f"<header><h1>{title}</h1><div>lhcad {html.escape(lhcad.__version__)}</div></header>"
        f"<nav>{nav}</nav><main>{''.join(sections)}</main></body></html>"
    )


def write_report(summary: dict, out: Path) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render(summary))
    return out


def pipeline_stage(cfg, ctx) -> dict:
    """Report stage of ``lhcad run``: render what the earlier stages returned."""
    summary = {"config": ctx.config_path, "stages": dict(ctx.summary)}
    out = write_report(summary, ctx.workdir / "report.html")
    return {"figures": {"sections": len(summary["stages"])}, "plots": [], "artefacts": {"report": str(out)}}


def report_command(
    summary: Annotated[Path, typer.Argument(help="summary.json written by `lhcad run`.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="HTML file to write.")] = Path("report.html"),
) -> None:
    """Build one self-contained HTML report (figures embedded) from a run's summary.json."""
    try:
        data = json.loads(summary.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{summary}: file not found") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{summary}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(data, dict) or not isinstance(data.get("stages", data), dict):
        raise ConfigError(f"{summary}: expected a summary object with a 'stages' mapping")
    path = write_report(data, out)
    typer.echo(f"report: {path}")
