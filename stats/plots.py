"""mplhep-style plots of the stats stage: p-values per window, a window's fit with pulls, Brazil plot."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import mplhep as hep  # noqa: E402
import numpy as np  # noqa: E402
from scipy.stats import norm  # noqa: E402


def _style() -> None:
    plt.style.use(hep.style.CMS)


def plot_p_values(result: dict, path: str | Path) -> Path:
    """Local p-value of every window (one line per selection efficiency), with 1–5 σ guides."""
    _style()
    fig, ax = plt.subplots(figsize=(10, 7))
    for eps in sorted({w["efficiency"] for w in result["windows"]}, reverse=True):
        rows = sorted((w for w in result["windows"] if w["efficiency"] == eps), key=lambda w: w["sr"][0])
        centres = [0.5 * (w["sr"][0] + w["sr"][1]) for w in rows]
        label = "no selection" if eps >= 1 else f"top {eps:g}"
        ax.plot(centres, [max(w["p_value"], 1e-300) for w in rows], "o-", label=label)
    for z in range(1, 6):
        ax.axhline(norm.sf(z), color="grey", lw=0.8, ls="--")
        ax.text(ax.get_xlim()[1], norm.sf(z), f" {z}σ", va="center", fontsize=12, color="grey")
    ax.set_yscale("log")
    ax.set_xlabel(r"SR centre $m_{jj}$ [GeV]")
    ax.set_ylabel("local p-value")
    ax.legend(title="selection", fontsize=14)
    hep.cms.label(data=False, ax=ax, rlabel="13 TeV")
    return _save(fig, path)


def plot_window_fit(window: dict, path: str | Path) -> Path:
    """Selected m_jj spectrum of one window, the sideband fit (SR shaded) and the pulls."""
    _style()
    spec = window["spectrum"]
    edges = np.asarray(spec["edges"])
    counts, expected = np.asarray(spec["counts"]), np.asarray(spec["expected"])
    err = np.asarray(spec["expected_error"])
    fig, (ax, axp) = plt.subplots(2, 1, figsize=(10, 9), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    hep.histplot(counts, edges, yerr=np.sqrt(counts), histtype="errorbar", color="k", label="selected data", ax=ax)
    hep.histplot(expected, edges, color="C0", label=f"{window['npar']}-par sideband fit", ax=ax)
    ax.fill_between(edges, np.append(expected - err, 0), np.append(expected + err, 0), step="post",
                    color="C0", alpha=0.3, label="fit uncertainty")
    for a in (ax, axp):
        a.axvspan(*window["sr"], color="C1", alpha=0.15)
    ax.set_yscale("log")
    ax.set_ylabel("events / bin")
    ax.legend(title=f"SR {window['sr'][0]:.0f}-{window['sr'][1]:.0f} GeV, ε={window['efficiency']:g}\n"
              f"p = {window['p_value']:.2g} ({window['significance']:.1f}σ), χ²/ndf = {window['chi2_ndf']:.2f}",
              fontsize=13)
    pulls = (counts - expected) / np.sqrt(np.maximum(expected, 1e-12))
    hep.histplot(pulls, edges, histtype="fill", color="C2", ax=axp)
    axp.axhline(0, color="k", lw=0.8)
    axp.set_ylabel("pull")
    axp.set_xlabel(r"$m_{jj}$ [GeV]")
    hep.cms.label(data=False, ax=ax, rlabel="13 TeV")
    return _save(fig, path)


def plot_brazil(limits: list[dict], path: str | Path, unit: str = "events", toys: bool = False) -> Path:
    """Observed and expected (±1σ green, ±2σ yellow) 95 % CLs upper limits versus signal mass."""
    _style()
    rows = sorted(limits, key=lambda r: r["mass"])
    src = [r["toys"] if toys else r for r in rows]
    m = np.array([r["mass"] for r in rows])
    exp = {k: np.array([s["expected"][k] for s in src]) for k in src[0]["expected"]}
    fig, ax = plt.subplots(figsize=(10, 7))
    ax.fill_between(m, exp["-2sigma"], exp["+2sigma"], color="#FFDF7F", label=r"expected $\pm 2\sigma$")
    ax.fill_between(m, exp["-1sigma"], exp["+1sigma"], color="#00CC00", label=r"expected $\pm 1\sigma$")
    ax.plot(m, exp["median"], "k--", label="expected")
    ax.plot(m, [s["observed"] for s in src], "ko-", label="observed")
    ax.set_yscale("log")
    ax.set_xlabel(r"resonance mass $m_{jj}$ [GeV]")
    ax.set_ylabel(f"95% CL upper limit on signal [{unit}]")
    ax.legend(title="CLs " + ("toys" if toys else "asymptotic"), fontsize=14)
    hep.cms.label(data=False, ax=ax, rlabel="13 TeV")
    return _save(fig, path)


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path.resolve()
