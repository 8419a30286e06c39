"""The HTML report: self-contained, every section present, no console errors in a real browser."""

from __future__ import annotations

import json
import shutil
import subprocess

import matplotlib.pyplot as plt
import numpy as np
import pytest

from lhcad import report
from lhcad.cli import main

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture()
def summary(tmp_path):
    fig, ax = plt.subplots()
    ax.plot(np.linspace(0, 1, 20), np.linspace(0, 1, 20) ** 2)
    png = tmp_path / "sic_curves.png"
    fig.savefig(png)
    plt.close(fig)
    return {
        "config": "configs/demo.yaml",
        "stage_wall_s": {"generate": 1.5, "train": 12.0},
        "stages": {
            "generate": {"figures": {"events": 1000, "s_over_b": 0.006}, "plots": [], "artefacts": {}},
            "train": {
                "figures": {"max_sic": {"cathode": 11.2, "cwola": 7.5}, "auc": {"cathode": 0.91}},
                "plots": [str(png)],
                "artefacts": {"models": "results/train"},
            },
            "l1": {"figures": {"tpr_at_fpr_1e-5": {"vae": {"ato4l": 0.21, "lq_btau": 0.01},
                                                   "ae": {"ato4l": 0.15, "lq_btau": 0.008}}}},
        },
    }


def test_render_embeds_plots_and_tables(summary):
    page = report.render(summary)
    assert page.count("<section") == 3
    assert "data:image/png;base64," in page
    assert "http://" not in page and "https://" not in page  # self-contained
    assert "<caption>tpr_at_fpr_1e-5</caption>" in page  # model x signal matrix table
    assert ">11.2<" in page


def test_report_in_headless_chromium(summary, tmp_path):
    assert CHROMIUM, "chromium not installed (make test installs it)"
    out = report.write_report(summary, tmp_path / "report.html")
    proc = subprocess.run(
        [CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr",
         "--virtual-time-budget=3000", "--dump-dom", out.as_uri()],
        capture_output=True, text=True, timeout=120,
    )
    dom = proc.stdout
    assert 'data-errors="0"' in dom, proc.stderr[-2000:]
    assert 'data-sections="3"' in dom
    for stage in ("generate", "train", "l1"):
        assert f'id="stage-{stage}"' in dom
    assert "Uncaught" not in proc.stderr


def test_report_command_bad_input(tmp_path, capsys):
    bad = tmp_path / "summary.json"
    bad.write_text("{not json")
    with pytest.raises(SystemExit) as exc:
        main(["report", str(bad), "--out", str(tmp_path / "r.html")])
    assert exc.value.code == 2
    assert "summary.json: not valid JSON" in capsys.readouterr().err


def test_report_command_writes_file(summary, tmp_path):
    path = tmp_path / "summary.json"
    path.write_text(json.dumps(summary))
    with pytest.raises(SystemExit) as exc:
        main(["report", str(path), "--out", str(tmp_path / "r.html")])
    assert exc.value.code == 0
    assert (tmp_path / "r.html").read_text().count("<section") == 3
