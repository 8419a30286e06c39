"""Resource and latency *estimates* for the firmware report (no synthesis runs here).

DSP rule (stated in the report): with the Latency strategy every multiplication is unrolled, one
multiplier per non-zero weight, shared ``reuse_factor`` times: ``DSP ≤ ⌈nnz / reuse_factor⌉``. This
is an upper bound: Vivado maps narrow products (both operands ≲ 10 bits, e.g. 8-bit weights × 10-bit
activations) to LUTs, so ``dsp_likely`` counts only layers whose weight × input widths exceed
that (``weight_bits > 10`` or input width > 18).

Latency rule: per dense layer ``1`` multiply stage + ``⌈log2(n_in) / 2⌉`` adder-tree stages (two
adder levels per cycle at ~200 MHz) + ``reuse_factor − 1``; ``1`` cycle per quantised ReLU; ``1``
cycle for input/output registers. ns = cycles × clock period. Synthesis reports
(``build_vitis.sh``) replace these numbers when the vendor tools are at hand.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np


def dsp_estimate(kernels: dict[str, np.ndarray], reuse_factor: int, weight_bits: int, input_widths: dict[str, int]) -> dict:
    nnz = {k: int(np.count_nonzero(w)) for k, w in kernels.items()}
    upper = sum(math.ceil(n / reuse_factor) for n in nnz.values())
    likely = sum(math.ceil(n / reuse_factor) for k, n in nnz.items() if weight_bits > 10 or input_widths.get(k, 0) > 18)
    return {"dsp_upper_bound": upper, "dsp_likely": likely, "nonzero_multiplications": nnz,
            "rule": "Latency strategy: one multiplier per non-zero weight / reuse_factor (upper bound); "
                    "products with weight <= 10 bits and input <= 18 bits are expected in LUTs (dsp_likely)"}


def latency_estimate(kernels: dict[str, np.ndarray], relu_layers: set[str], reuse_factor: int, clock_ns: float) -> dict:
    cycles = 1  # I/O registers
    per = {}
    for name, w in kernels.items():
        n_in = np.asarray(w).shape[0]
        c = 1 + math.ceil(math.log2(max(n_in, 2)) / 2) + (reuse_factor - 1)
        if name in relu_layers:
            c += 1
        per[name] = c
        cycles += c
    return {"cycles": cycles, "ns": cycles * clock_ns, "clock_period_ns": clock_ns, "per_layer_cycles": per,
            "estimate": True, "note": "estimate only: no HLS/logic synthesis ran (run build_vitis.sh for reports)",
            "rule": "per dense layer: 1 multiply + ceil(log2(n_in)/2) adder-tree cycles + (reuse_factor-1); "
                    "+1 per ReLU; +1 for I/O registers"}


def write(report: dict, path: str | Path) -> Path:
    path = Path(path)
    path.write_text(json.dumps(report, indent=1, default=float))
    return path
