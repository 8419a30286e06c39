"""Per-LS luminosity tables in brilcalc's CSV format (``brilcalc lumi --byls --output-style csv``).

The layout is the one of ``shared/data/lumi/lumi_small.csv`` and what ``coffea.lumi_tools.LumiData``
reads (columns 0, 1, 6, 7 = run:fill, ls:ls, recorded, avgpu)::

    #Data tag : 19v2 , Norm tag: None
    #run:fill,ls,time,beamstatus,E(GeV),delivered(/pb),recorded(/pb),avgpu,source
    297050:5839,12:12,06/16/17 20:55:44,STABLE BEAMS,6500,0.160000792,0.154234862,40.3,HFET

>>> import numpy as np, datetime as dt
>>> print(brilcalc_csv(np.array([297050]), np.array([5839]), np.array([12]),
...       [dt.datetime(2017, 6, 16, 20, 55, 44)], np.array([0.160000792]), np.array([0.154234862]),
...       np.array([40.3])).splitlines()[2])
297050:5839,12:12,06/16/17 20:55:44,STABLE BEAMS,6500,0.160000792,0.154234862,40.3,HFET
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Sequence

import numpy as np

LS_SECONDS = 23.31  # 2^18 orbits / 11.245 kHz
HEADER = (
    "#Data tag : 19v2 , Norm tag: None\n"
    "#run:fill,ls,time,beamstatus,E(GeV),delivered(/pb),recorded(/pb),avgpu,source\n"
)


def brilcalc_csv(
    run: np.ndarray,
    fill: np.ndarray,
    ls: np.ndarray,
    time: Sequence[_dt.datetime],
    delivered: np.ndarray,
    recorded: np.ndarray,
    avgpu: np.ndarray,
) -> str:
    """The CSV text of per-LS rows (one row per element of the arrays)."""
    lines = [
        f"{r}:{f},{s}:{s},{t:%m/%d/%y %H:%M:%S},STABLE BEAMS,6500,{d:.9f},{c:.9f},{p:.1f},HFET"
        for r, f, s, t, d, c, p in zip(run, fill, ls, time, delivered, recorded, avgpu, strict=True)
    ]
    return HEADER + "\n".join(lines) + "\n"
