"""The run procedure: flag LSs, remove them, test what is left, certify → golden JSON.

For every monitor element (ME) and run:

1. an LS is **flagged** when its score is at or above the ME's threshold; an LS with fewer than
   ``min_entries`` entries is marked **low_stats** (reported; certified or not per ``low_stats``
   policy, ``"exclude"`` by default — never silently dropped);
2. the flagged (and excluded) LSs are removed and the counts of the remaining LSs are summed into one
   run-level histogram;
3. that histogram is compared with the GOOD reference (the sum of the reference runs' LSs) by a
   **χ² homogeneity test** of two histograms (:func:`chi2_homogeneity`); an optional relative
   systematic per bin widens the variance;
4. verdict: **BAD** if no LS remains, more than ``max_flagged_fraction`` of the LSs are flagged or the
   test's p-value is below ``alpha``; otherwise **RECOVERED** if any LS was flagged, else **GOOD**.

The **combined** verdict uses every ME at once: an LS is removed if any ME flags it at that ME's
combined threshold (calibrated at ``false_flag_rate / n_ME``, Bonferroni, so the combined false-flag
rate stays ≤ the target) or is low-stats in any ME; the remaining LSs are tested in every ME at
``alpha / n_ME``. The certified LSs of GOOD and RECOVERED runs form the golden JSON
(``{"run": [[first, last], ...]}``, the format ``coffea.lumi_tools.LumiMask`` reads).

>>> to_golden({297050: [1, 2, 3, 7, 8], 297056: [4]})
{'297050': [[1, 3], [7, 8]], '297056': [[4, 4]]}
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from scipy import stats

VERDICTS = ("GOOD", "RECOVERED", "BAD")


@dataclass
class MEScores:
    """Per-LS scores of one ME with what certification needs."""

    me: str
    run: np.ndarray
    lumi: np.ndarray
    counts: np.ndarray  # (n_LS, n_bins)
    score: np.ndarray  # (n_LS,)
    threshold: float  # at false_flag_rate (per-ME verdicts)
    threshold_combined: float  # at false_flag_rate / n_ME (combined verdict)
    reference: np.ndarray  # (n_bins,) summed counts of the GOOD reference LSs


@dataclass
class RunVerdict:
    run: int
    verdict: str
    n_ls: int
    flagged: list[int] = field(default_factory=list)
    low_stats: list[int] = field(default_factory=list)
    certified: list[int] = field(default_factory=list)
    chi2: dict[str, float] = field(default_factory=dict)  # per ME
    ndf: dict[str, int] = field(default_factory=dict)
    p_value: dict[str, float] = field(default_factory=dict)
    reason: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class CertifyOptions:
    min_entries: int = 20
    low_stats: str = "exclude"  # or "keep"
    alpha: float = 1e-3
    syst: float = 0.0
    max_flagged_fraction: float = 0.5


def chi2_homogeneity(counts: np.ndarray, reference: np.ndarray, syst: float = 0.0) -> tuple[float, int, float]:
    """χ² test that two histograms come from one shape: returns (χ², ndf, p-value).

    With fractions ``f = n / N`` and the pooled fraction ``p = (n1 + n2) / (N1 + N2)``,
    ``χ² = Σ (f1 − f2)² / (p (1/N1 + 1/N2) + (syst · p)²)`` over bins with ``p > 0``, ``ndf`` = those
    bins − 1. With ``syst = 0`` this is the textbook Pearson χ² of the 2 × k contingency table.
    """
    n1, n2 = np.asarray(counts, float), np.asarray(reference, float)
    N1, N2 = n1.sum(), n2.sum()
    if N1 <= 0 or N2 <= 0:
        return float("nan"), 0, 0.0
    p = (n1 + n2) / (N1 + N2)
    ok = p > 0
    var = p[ok] * (1 / N1 + 1 / N2) + (syst * p[ok]) ** 2
    chi2 = float((((n1[ok] / N1) - (n2[ok] / N2)) ** 2 / var).sum())
    ndf = int(ok.sum() - 1)
    return chi2, ndf, float(stats.chi2.sf(chi2, ndf)) if ndf > 0 else 1.0


def to_golden(certified: dict[int, list[int]]) -> dict[str, list[list[int]]]:
    """``{run: [LS, ...]}`` → golden JSON ranges ``{"run": [[first, last], ...]}`` (runs with no LS left out)."""
    out: dict[str, list[list[int]]] = {}
    for run in sorted(certified):
        ls = sorted(int(x) for x in set(certified[run]))
        if not ls:
            continue
        ranges = [[ls[0], ls[0]]]
        for x in ls[1:]:
            if x == ranges[-1][1] + 1:
                ranges[-1][1] = x
            else:
                ranges.append([x, x])
        out[str(int(run))] = ranges
    return out


def write_golden(golden: dict, path: str | Path) -> Path:
    """Write a golden JSON in the CMS layout (one run per line)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [f'  "{run}": {json.dumps(ranges)}' for run, ranges in golden.items()]
    path.write_text("{\n" + ",\n".join(lines) + "\n}\n")
    return path


def _verdict(run, lumi, removed, flagged, low, kept, tests, alpha, max_frac) -> RunVerdict:
    v = RunVerdict(int(run), "GOOD", len(lumi), [int(x) for x in lumi[flagged]], [int(x) for x in lumi[low]])
    for me, (chi2, ndf, p) in tests.items():
        v.chi2[me], v.ndf[me], v.p_value[me] = chi2, ndf, p
    frac = float(flagged.mean()) if len(flagged) else 0.0
    if not kept.any():
        v.verdict, v.reason = "BAD", "no LS left after removing flagged/low-stats LSs"
    elif frac > max_frac:
        v.verdict, v.reason = "BAD", f"{frac:.0%} of LSs flagged (> {max_frac:.0%})"
    elif any(p < alpha for _, _, p in tests.values()):
        worst = min(tests, key=lambda m: tests[m][2])
        v.verdict, v.reason = "BAD", f"remaining run differs from reference in {worst} (p = {tests[worst][2]:.2e})"
    elif flagged.any():
        v.verdict, v.reason = "RECOVERED", f"{int(flagged.sum())} LS(s) flagged and removed"
    if v.verdict != "BAD":
        v.certified = [int(x) for x in lumi[kept]]
    return v


def certify_me(s: MEScores, opts: CertifyOptions) -> dict[int, RunVerdict]:
    """Per-run verdicts of one ME (threshold at the target false-flag rate, test at ``alpha``)."""
    out = {}
    entries = s.counts.sum(axis=1)
    for run in np.unique(s.run):
        rows = s.run == run
        flagged = s.score[rows] >= s.threshold
        low = (entries[rows] < opts.min_entries) & ~flagged
        kept = ~flagged & (~low if opts.low_stats == "exclude" else True)
        tests = {s.me: chi2_homogeneity(s.counts[rows][kept].sum(axis=0), s.reference, opts.syst)} if kept.any() else {}
        out[int(run)] = _verdict(run, s.lumi[rows], ~kept, flagged, low, kept, tests, opts.alpha,
                                 opts.max_flagged_fraction)
    return out


def align(scores: list[MEScores]) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """Union of (run, LS) over MEs: (run, lumi, per-ME row index or -1 where the ME lacks that LS)."""
    keys = np.unique(np.concatenate([s.run * (1 << 32) + s.lumi for s in scores]))
    idx = []
    for s in scores:
        k = s.run * (1 << 32) + s.lumi
        pos = np.searchsorted(keys, k)
        row = np.full(len(keys), -1, np.int64)
        row[pos] = np.arange(len(k))
        idx.append(row)
    return keys >> 32, keys & 0xFFFFFFFF, idx


def certify_combined(scores: list[MEScores], opts: CertifyOptions) -> tuple[dict[int, RunVerdict], dict]:
    """Combined verdicts over all MEs; also returns the per-LS table (run, lumi, flags per ME)."""
    run, lumi, idx = align(scores)
    n_me = len(scores)
    flag_any = np.zeros(len(run), bool)
    low_any = np.zeros(len(run), bool)
    table: dict = {"run": run, "lumi": lumi}
    for s, row in zip(scores, idx):
        have = row >= 0
        sc = np.full(len(run), np.nan)
        sc[have] = s.score[row[have]]
        ent = np.zeros(len(run))
        ent[have] = s.counts[row[have]].sum(axis=1)
        fl = np.nan_to_num(sc, nan=-np.inf) >= s.threshold_combined
        table[f"score/{s.me}"], table[f"entries/{s.me}"], table[f"flagged/{s.me}"] = sc, ent, fl
        flag_any |= fl
        low_any |= ent < opts.min_entries
    low_any &= ~flag_any
    table["flagged"], table["low_stats"] = flag_any, low_any
    certified = np.zeros(len(run), bool)
    out = {}
    for r in np.unique(run):
        rows = np.flatnonzero(run == r)
        flagged, low = flag_any[rows], low_any[rows]
        kept = ~flagged & (~low if opts.low_stats == "exclude" else True)
        tests = {}
        if kept.any():
            for s, row in zip(scores, idx):
                sel = row[rows][kept]
                tests[s.me] = chi2_homogeneity(s.counts[sel[sel >= 0]].sum(axis=0), s.reference, opts.syst)
        v = _verdict(r, lumi[rows], ~kept, flagged, low, kept, tests, opts.alpha / n_me, opts.max_flagged_fraction)
        out[int(r)] = v
        if v.verdict != "BAD":
            certified[rows[kept]] = True
    table["certified"] = certified
    return out, table


def verdict_counts(verdicts: dict[int, RunVerdict]) -> dict[str, int]:
    return {k: sum(v.verdict == k for v in verdicts.values()) for k in VERDICTS}
