"""Integrated luminosity of certified LSs with ``coffea.lumi_tools`` (brilcalc CSV, golden JSON).

``LumiData`` reads a ``brilcalc lumi --byls --output-style csv`` file (recorded luminosity, /pb in
the files lhcad writes and in ``../shared/data/lumi/lumi_small.csv``); ``LumiMask`` reads a golden JSON.

* :func:`golden_runlumis` — the (run, LS) pairs of a golden JSON that the CSV knows, optionally in a run
  range, selected with ``LumiMask`` (so the JSON is read exactly as analyses read it);
* :func:`certified_lumi` — ``LumiData.get_lumi`` of those pairs;
* :func:`recovered_lumi` — luminosity of the certified LSs of the runs that would have been lost
  whole without per-LS certification (runs with at least one flagged LS: RECOVERED).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lhcad.config import ConfigError


def load_lumidata(csv: str | Path):
    """``coffea.lumi_tools.LumiData`` of a brilcalc CSV (one clear error if it cannot be read)."""
    from coffea.lumi_tools import LumiData

    path = Path(csv)
    if not path.is_file():
        raise ConfigError(f"{csv}: brilcalc luminosity CSV not found")
    try:
        data = LumiData(str(path))
    except (ValueError, IndexError) as exc:
        raise ConfigError(f"{csv}: not a brilcalc --byls CSV ({exc})") from None
    if data._lumidata.ndim != 2 or len(data._lumidata) == 0:
        raise ConfigError(f"{csv}: no per-LS rows")
    return data


def csv_runlumis(lumidata) -> np.ndarray:
    """All (run, LS) pairs listed in a LumiData's CSV, (n, 2) uint32."""
    return lumidata._lumidata[:, :2].astype(np.uint32)


def golden_runlumis(golden: str | Path, lumidata, runs: tuple[int, int] | None = None) -> np.ndarray:
    """(run, LS) pairs of the CSV that the golden JSON accepts (``LumiMask``), optionally in ``runs``."""
    from coffea.lumi_tools import LumiMask

    if not Path(golden).is_file():
        raise ConfigError(f"{golden}: golden JSON not found")
    try:
        mask = LumiMask(str(golden))
    except ValueError as exc:
        raise ConfigError(f"{golden}: not a golden JSON ({exc})") from None
    rl = csv_runlumis(lumidata)
    sel = mask(rl[:, 0], rl[:, 1])
    if runs is not None:
        sel &= (rl[:, 0] >= runs[0]) & (rl[:, 0] <= runs[1])
    return rl[sel]


def certified_lumi(golden: str | Path, csv: str | Path, runs: tuple[int, int] | None = None) -> float:
    """Recorded luminosity (/pb for brilcalc -u /pb) of the LSs a golden JSON certifies."""
    data = load_lumidata(csv)
    return float(data.get_lumi(golden_runlumis(golden, data, runs)))


def lumi_of(lumidata, run: np.ndarray, lumi: np.ndarray) -> float:
    """``LumiData.get_lumi`` of explicit (run, LS) pairs."""
    if len(run) == 0:
        return 0.0
    return float(lumidata.get_lumi(np.c_[np.asarray(run, np.uint32), np.asarray(lumi, np.uint32)]))


def missing_from_csv(lumidata, run: np.ndarray, lumi: np.ndarray) -> int:
    """How many (run, LS) pairs have no row in the CSV (their luminosity counts as 0)."""
    have = set(map(tuple, csv_runlumis(lumidata).tolist()))
    return sum((int(r), int(ls)) not in have for r, ls in zip(run, lumi))


def recovered_lumi(golden_path: str | Path, csv: str | Path, recovered_runs) -> float:
    """Luminosity of the certified LSs of ``recovered_runs`` (read back through ``LumiMask``)."""
    data = load_lumidata(csv)
    rl = golden_runlumis(golden_path, data)
    return float(data.get_lumi(rl[np.isin(rl[:, 0], np.asarray(list(recovered_runs), np.uint32))]))
