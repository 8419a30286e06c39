"""Pipeline configuration: YAML files validated by pydantic models.

Every model forbids unknown keys, so a misspelt key fails instead of being ignored. Errors are
reported as one line per problem naming the key path, e.g.::

    configs/bad.yaml: generate.dijet.evnts: unknown key (allowed: events, files, ...)

>>> cfg = PipelineConfig.model_validate({"store": "out.zarr"})
>>> cfg.cluster.type
'dask-local'
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator


class ConfigError(ValueError):
    """A configuration file that cannot be used; the message names the file and key path."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


# --------------------------------------------------------------------------------------------- cluster
class ClusterConfig(_Strict):
    """Which executor every stage uses (see :mod:`lhcad.cluster`)."""

    type: Literal[
        "iterative", "futures", "dask-local", "dask-address", "dask-gateway", "dask-jobqueue",
        "dask-kubernetes",
    ] = "dask-local"
    workers: int = Field(2, ge=1, description="workers (dask-local, futures) or jobs to scale to")
    threads_per_worker: int = Field(1, ge=1)
    memory_limit: str = "auto"
    address: str | None = Field(None, description="scheduler address for dask-address")
    # dask-gateway
    gateway_address: str | None = None
    gateway_options: dict[str, Any] = Field(default_factory=dict)
    # dask-jobqueue
    jobqueue_system: Literal["slurm", "htcondor", "pbs", "sge", "lsf"] = "htcondor"
    jobqueue_options: dict[str, Any] = Field(
        default_factory=dict, description="keyword arguments of the jobqueue cluster class"
    )
    # dask-kubernetes
    kubernetes_options: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _needs_address(self) -> ClusterConfig:
        if self.type == "dask-address" and not self.address:
            raise ValueError("cluster.type 'dask-address' needs cluster.address (e.g. tcp://host:8786)")
        return self


# ----------------------------------------------------------------------------------------- generation
class GenerateDijetConfig(_Strict):
    events: int = Field(200_000, gt=0)
    signal: str = "wprime_xy"
    signal_events: int | None = Field(None, ge=0)
    s_over_b: float | None = Field(None, ge=0, description="S/B in the signal-region window")
    extra_background: int = Field(0, ge=0, description="SR-only background events for idealized AD")
    test_events: int = Field(0, ge=0)
    events_per_file: int = Field(500_000, gt=0)
    seed: int = 1


class GenerateDQMConfig(_Strict):
    runs: int = Field(6, gt=0)
    bad_runs: int = Field(2, ge=0)
    events_per_ls: int = Field(200, gt=0)
    ls_per_run: int = Field(300, gt=0)
    faults: list[str] = Field(default_factory=lambda: ["hot_tower", "met_tail", "dead_sector", "pileup_spike"])
    severity: float = Field(1.0, gt=0)
    seed: int = 2


class GenerateL1Config(_Strict):
    events: int = Field(200_000, gt=0)
    signal_events: int = Field(20_000, ge=0)
    seed: int = 3


class GenerateConfig(_Strict):
    dijet: GenerateDijetConfig | None = Field(default_factory=GenerateDijetConfig)
    dqm: GenerateDQMConfig | None = Field(default_factory=GenerateDQMConfig)
    l1: GenerateL1Config | None = Field(default_factory=GenerateL1Config)


# ----------------------------------------------------------------------------------------- processing
class ProcessConfig(_Strict):
    """Which processors run on which fileset (a fileset path or the generator's outputs)."""

    dijet: str | None = Field("generated", description="fileset JSON, or 'generated'")
    lumi: str | None = Field("generated")
    l1: str | None = Field("generated")
    chunksize: int = Field(200_000, gt=0)
    skipbadfiles: bool = False
    treename: str = "Events"


# ----------------------------------------------------------------------------------------- models/stats
class TrainConfig(_Strict):
    methods: list[str] = Field(default_factory=lambda: ["supervised", "iad", "cwola", "cathode"])
    features: list[str] = Field(default_factory=lambda: ["mj1", "delta_m", "tau21_j1", "tau21_j2"])
    sr: tuple[float, float] = (3300.0, 3700.0)
    sb_width: float = Field(200.0, gt=0)
    folds: int = Field(5, ge=2)
    ensemble: int = Field(5, ge=1)
    classifier: Literal["mlp", "hgb"] = "hgb"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    seed: int = 0


class StatsConfig(_Strict):
    window_width: float = Field(400.0, gt=0)
    window_step: float = Field(100.0, gt=0)
    n_windows: int = Field(9, gt=0)
    first_window: float = Field(3000.0, gt=0)
    efficiencies: list[float] = Field(default_factory=lambda: [0.1, 0.01, 0.001])
    score: str = "cathode"
    toys: int = Field(1000, ge=0)


class DQMConfig(_Strict):
    monitor_elements: list[str] = Field(default_factory=lambda: ["MET_significance", "Jet_pt", "Jet_phi"])
    model: Literal["dense", "lstm"] = "dense"
    false_flag_rate: float = Field(1e-3, gt=0, lt=1)
    min_entries: int = Field(20, ge=0)
    lumi_csv: str | None = None


class L1Config(_Strict):
    models: list[str] = Field(default_factory=lambda: ["ae", "vae"])
    epochs: int = Field(20, ge=1)


class DeployConfig(_Strict):
    model: str = "vae"
    weight_bits: int = Field(8, ge=2, le=32)
    integer_bits: int = Field(3, ge=0)
    sparsity: float = Field(0.5, ge=0, lt=1)
    reuse_factor: int = Field(1, ge=1)
    part: str = "xcvu9p-flga2104-2L-e"
    clock_period_ns: float = Field(5.0, gt=0)


# ----------------------------------------------------------------------------------------- pipeline
STAGES = ("generate", "process", "train", "score", "stats", "dqm", "l1", "deploy", "report")


class PipelineConfig(_Strict):
    """A whole ``lhcad run``: where results go, which cluster, and the settings of each stage."""

    name: str = "lhcad"
    store: str = Field("results/store.zarr", description="Zarr store path or fsspec URL")
    workdir: str = Field("results", description="artefacts, plots, report (path or fsspec URL)")
    stages: list[Literal[STAGES]] = Field(default_factory=lambda: list(STAGES))  # type: ignore[valid-type]
    cluster: ClusterConfig = Field(default_factory=ClusterConfig)
    generate: GenerateConfig = Field(default_factory=GenerateConfig)
    process: ProcessConfig = Field(default_factory=ProcessConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    stats: StatsConfig = Field(default_factory=StatsConfig)
    dqm: DQMConfig = Field(default_factory=DQMConfig)
    l1: L1Config = Field(default_factory=L1Config)
    deploy: DeployConfig = Field(default_factory=DeployConfig)


def _format_error(source: str, err: ValidationError, model: type[BaseModel]) -> str:
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "<top>"
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
            allowed = _allowed_keys(model, e["loc"][:-1])
            if allowed:
                msg += f" (allowed: {', '.join(allowed)})"
        else:
            msg = e["msg"]
            if "input" in e and not isinstance(e["input"], dict | list):
                msg += f" (got {e['input']!r})"
        lines.append(f"{source}: {loc}: {msg}")
    return "\n".join(lines)


def _allowed_keys(model: type[BaseModel], loc: tuple) -> list[str]:
    """Field names of the (nested) model at ``loc`` — for 'did you mean' style messages."""
    current: Any = model
    for part in loc:
        field = getattr(current, "model_fields", {}).get(part)
        if field is None:
            return []
        ann = field.annotation
        candidates = [ann, *getattr(ann, "__args__", ())]
        current = next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)
        if current is None:
            return []
    return sorted(current.model_fields)


def validate(data: Any, source: str = "<config>", model: type[BaseModel] = PipelineConfig) -> Any:
    """Validate a mapping against ``model``; raise :class:`ConfigError` with key-path messages."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: <top>: expected a mapping of keys, got {type(data).__name__}")
    try:
        return model.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format_error(source, err, model)) from None


def load(path: str | Path, model: type[BaseModel] = PipelineConfig) -> Any:
    """Read and validate a YAML config file."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else "?"
        raise ConfigError(f"{path}: {where}: invalid YAML ({getattr(exc, 'problem', exc)})") from None
    return validate(data, str(path), model)


def demo_config_path() -> Path:
    """The embedded default config (``configs/demo.yaml``, shipped inside the package)."""
    from importlib.resources import files

    return Path(str(files("lhcad.configs").joinpath("demo.yaml")))
