"""hls4ml: convert the QKeras encoder to a Vitis HLS project, write it, compile the C simulation
with g++, predict, and bundle the project (tarball, ``hls4ml_config.yml``, vendor build script).

Settings: Vitis backend, FPGA part (default xcvu9p), ``io_parallel``, Latency strategy, configurable
reuse factor and clock. Per-layer precisions come from the QKeras quantizers
(``config_from_keras_model(granularity="name")``); the input layer is ``ap_fixed<W, I>`` and the
inputs are rounded to that grid before both QKeras and the C simulation see them, so the two are
compared on identical inputs.
"""

from __future__ import annotations

import os
import shutil
import sys
import tarfile
from pathlib import Path


def legacy_keras():
    """Import TensorFlow with Keras 2 (``tf_keras``) and make ``import keras`` resolve to it.

    Work-around, kept in this one function (see DESIGN.md): QKeras 0.9 and tfmot only work with
    ``tf_keras`` (``TF_USE_LEGACY_KERAS=1``), and hls4ml 1.3 chooses its Keras parser from
    ``keras.__version__``; with Keras 3 installed a tf_keras/QKeras model is sent to the Keras-3
    parser and fails (``'Node' object has no attribute 'arguments'``). Aliasing
    ``sys.modules["keras"] = tf_keras`` before hls4ml is imported sends it to the Keras-2 parser.
    The alias is process-wide, so call this only in processes that do firmware work.
    Returns the ``tf_keras`` module.
    """
    os.environ["TF_USE_LEGACY_KERAS"] = "1"
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tf_keras

    if sys.modules.get("keras") is not tf_keras:
        sys.modules["keras"] = tf_keras
    return tf_keras


def hls4ml_config(model, input_precision: str, reuse_factor: int = 1, output_precision: str | None = None) -> dict:
    """Per-layer hls4ml config from the QKeras quantizers; Latency strategy."""
    legacy_keras()
    import hls4ml

    cfg = hls4ml.utils.config_from_keras_model(model, granularity="name", backend="Vitis")
    cfg["Model"]["Strategy"] = "Latency"
    cfg["Model"]["ReuseFactor"] = reuse_factor
    for name, layer_cfg in cfg["LayerName"].items():
        layer_cfg["ReuseFactor"] = reuse_factor
        if name == model.layers[0].name:
            layer_cfg["Precision"]["result"] = input_precision
    if output_precision:
        last = model.layers[-1].name
        cfg["LayerName"][last]["Precision"]["result"] = output_precision
    return cfg


def convert(model, out_dir: str | Path, hls_config: dict, part: str, clock_period_ns: float,
            project_name: str = "l1ad_encoder"):
    """hls4ml model (Vitis, io_parallel) written to ``out_dir`` and compiled with g++."""
    legacy_keras()
    import hls4ml

    if shutil.which("g++") is None:
        raise RuntimeError("hls4ml compile() needs g++ on PATH")
    hm = hls4ml.converters.convert_from_keras_model(
        model, hls_config=hls_config, output_dir=str(out_dir), project_name=project_name, backend="Vitis",
        part=part, io_type="io_parallel", clock_period=clock_period_ns)
    hm.write()
    hm.compile()
    return hm


BUILD_SCRIPT = """#!/usr/bin/env bash
# Build the lhcad L1 AD encoder firmware with the AMD/Xilinx tools (not available where lhcad ran).
# Needs Vitis HLS (vitis_hls) and, for logic synthesis, Vivado, both on PATH.
#   ./build_vitis.sh            C simulation + HLS synthesis (reports in {project}/{name}_prj/solution1/syn/report)
#   VSYNTH=1 ./build_vitis.sh   also run Vivado logic synthesis (vivado_synth.rpt)
set -euo pipefail
cd "$(dirname "$0")"
[ -d {project} ] || tar xzf {tarball}
cd {project}
vitis_hls -f build_prj.tcl "reset=1 csim=1 synth=1 cosim=0 validation=0 export=0 vsynth=${{VSYNTH:-0}}"
"""


def bundle(project_dir: str | Path, out_dir: str | Path, project_name: str) -> dict[str, str]:
    """Tarball of the HLS project, its ``hls4ml_config.yml`` and a build script, in ``out_dir``."""
    project_dir, out_dir = Path(project_dir), Path(out_dir)
    tarball = out_dir / "hls_project.tar.gz"
    with tarfile.open(tarball, "w:gz") as tar:
        tar.add(project_dir, arcname=project_dir.name)
    cfg = out_dir / "hls4ml_config.yml"
    shutil.copyfile(project_dir / "hls4ml_config.yml", cfg)
    script = out_dir / "build_vitis.sh"
    script.write_text(BUILD_SCRIPT.format(project=project_dir.name, tarball=tarball.name, name=project_name))
    script.chmod(0o755)
    return {"hls_project_tarball": str(tarball), "hls4ml_config": str(cfg), "build_script": str(script),
            "hls_project": str(project_dir)}
