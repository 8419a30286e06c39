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
    timeout: float = Field(
        60.0, gt=0, description="seconds to wait for a scheduler / gateway / Kubernetes API to answer"
    )
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
    """``lhcad generate dijet``: QCD dijet background + an injected resonance (see lhcad.generate.dijet)."""

    events: int = Field(200_000, gt=0, description="QCD background events in the 'data' dataset")
    signal: str = Field("wprime_xy", description="signal name (lhcad.generate.signals.SIGNALS)")
    signal_mass: float | None = Field(None, gt=0, description="M_A in GeV (default: the signal's)")
    daughter_masses: tuple[float, float] | None = Field(None, description="masses of B and C in GeV")
    signal_events: int | None = Field(None, ge=0, description="signal events injected into 'data'")
    s_over_b: float | None = Field(None, ge=0, description="S/B in the signal-region window")
    sr: tuple[float, float] = Field((3300.0, 3700.0), description="signal-region m_jj window (GeV)")
    extra_background: int = Field(0, ge=0, description="SR-only background events for idealized AD")
    test_events: int = Field(0, ge=0, description="labelled SR test events (80 % QCD, 20 % signal)")
    trigger_pt: float | None = Field(None, gt=0, description="keep events with leading AK8 pT above (GeV)")
    events_per_file: int = Field(500_000, gt=0)
    seed: int = 1

    @model_validator(mode="after")
    def _one_signal_amount(self) -> GenerateDijetConfig:
        if self.signal_events is not None and self.s_over_b is not None:
            raise ValueError("give either signal_events or s_over_b, not both")
        if not self.sr[0] < self.sr[1]:
            raise ValueError(f"sr must be (low, high) with low < high (got {self.sr})")
        return self


class GenerateDQMConfig(_Strict):
    """``lhcad generate dqm``: Run 2 runs with per-LS luminosity and injected detector faults."""

    runs: int = Field(6, gt=0)
    bad_runs: int = Field(2, ge=0)
    events_per_ls: int = Field(200, gt=0, description="mean events per LS at the highest LS luminosity")
    events: int | None = Field(None, gt=0, description="expected total events (overrides events_per_ls)")
    ls_per_run: int = Field(300, gt=0)
    faults: list[Literal["hot_tower", "met_tail", "dead_sector", "pileup_spike"]] = Field(
        default_factory=lambda: ["hot_tower", "met_tail", "dead_sector", "pileup_spike"]
    )
    severity: float = Field(1.0, gt=0)
    events_per_file: int = Field(500_000, gt=0)
    seed: int = 2

    @model_validator(mode="after")
    def _bad_le_runs(self) -> GenerateDQMConfig:
        if self.bad_runs > self.runs:
            raise ValueError(f"bad_runs ({self.bad_runs}) cannot exceed runs ({self.runs})")
        return self


class GenerateL1Config(_Strict):
    """``lhcad generate l1``: ADC2021-like SM mixture + BSM signals + a black box."""

    events: int = Field(200_000, gt=0, description="SM background events")
    signal_events: int = Field(20_000, ge=0, description="events of each BSM signal")
    blackbox_events: int = Field(10_000, ge=0, description="events of the black-box mixture")
    events_per_file: int = Field(500_000, gt=0)
    seed: int = 3


class GenerateConfig(_Strict):
    dijet: GenerateDijetConfig | None = Field(default_factory=GenerateDijetConfig)
    dqm: GenerateDQMConfig | None = Field(default_factory=GenerateDQMConfig)
    l1: GenerateL1Config | None = Field(default_factory=GenerateL1Config)


# ----------------------------------------------------------------------------------------- processing
class DijetCutsConfig(_Strict):
    """Dijet preselection (defaults: the CMS dijet anomaly search)."""

    pt_min: float = Field(300.0, ge=0, description="AK8 jet pT threshold (GeV)")
    eta_max: float = Field(2.5, gt=0)
    delta_eta_max: float = Field(1.3, gt=0)
    mjj_min: float = Field(1200.0, ge=0)
    jet_id: int = Field(2, ge=0, description="FatJet_jetId bits required (2 = tight, 0 = none)")


class MonitorElementConfig(_Strict):
    """Regular binning of one per-LS monitor element."""

    bins: int = Field(gt=0)
    start: float
    stop: float

    @model_validator(mode="after")
    def _ordered(self) -> MonitorElementConfig:
        if self.stop <= self.start:
            raise ValueError(f"stop ({self.stop}) must be above start ({self.start})")
        return self


def _default_monitor_elements() -> dict[str, MonitorElementConfig]:
    import math

    return {
        "MET_significance": MonitorElementConfig(bins=50, start=0.0, stop=25.0),
        "MET_pt": MonitorElementConfig(bins=50, start=0.0, stop=500.0),
        "Jet_pt": MonitorElementConfig(bins=50, start=0.0, stop=500.0),
        "Jet_eta": MonitorElementConfig(bins=50, start=-5.0, stop=5.0),
        "Jet_phi": MonitorElementConfig(bins=32, start=-math.pi, stop=math.pi),
        "nJet": MonitorElementConfig(bins=20, start=0.0, stop=20.0),
        "PV_npvs": MonitorElementConfig(bins=80, start=0.0, stop=80.0),
    }


class L1ObjectsConfig(_Strict):
    """L1 object layout options."""

    lepton_filter: bool = Field(False, description="keep only events with >= 1 electron or muon")
    quantise: bool = Field(False, description="quantise pT/eta/phi to the bits below")
    pt_bits: int = Field(10, ge=2, le=24)
    eta_bits: int = Field(8, ge=2, le=24)
    phi_bits: int = Field(8, ge=2, le=24)


class ProcessConfig(_Strict):
    """Which processors run on which fileset (a fileset path or the generator's outputs)."""

    dijet: str | None = Field("generated", description="fileset JSON, or 'generated'")
    lumi: str | None = Field("generated")
    l1: str | None = Field("generated")
    chunksize: int = Field(200_000, gt=0)
    skipbadfiles: bool = False
    treename: str = "Events"
    dijet_cuts: DijetCutsConfig = Field(default_factory=DijetCutsConfig)
    monitor_elements: dict[str, MonitorElementConfig] = Field(default_factory=_default_monitor_elements)
    l1_objects: L1ObjectsConfig = Field(default_factory=L1ObjectsConfig)

    def options(self, table: str) -> dict[str, Any]:
        """Hyper-parameters of processor ``table`` (dijet | lumi | l1) as keyword arguments."""
        if table == "dijet":
            return self.dijet_cuts.model_dump()
        if table == "lumi":
            return {"monitor_elements": {k: v.model_dump() for k, v in self.monitor_elements.items()}}
        if table == "l1":
            o = self.l1_objects
            bits = {"pt": o.pt_bits, "eta": o.eta_bits, "phi": o.phi_bits} if o.quantise else None
            return {"lepton_filter": o.lepton_filter, "quantise_bits": bits}
        raise ValueError(f"unknown processor {table!r}")


# ----------------------------------------------------------------------------------------- models/stats
class TrainConfig(_Strict):
    """Weakly supervised resonant AD (lhcad.models): methods, features, windows, ensembles, flows."""

    methods: list[Literal["supervised", "iad", "cwola", "anode", "cathode", "ranode",
                          "cathode_b", "vaeqr", "tagntrain", "quak"]] = Field(
        default_factory=lambda: ["supervised", "iad", "cwola", "cathode"])
    features: list[str] = Field(default_factory=lambda: ["mj1", "delta_m", "tau21_j1", "tau21_j2"],
                                min_length=1)
    resonant: str = Field("mjj", description="the resonant variable the windows cut on")
    sr: tuple[float, float] = (3300.0, 3700.0)
    windows: list[tuple[float, float]] = Field(
        default_factory=list, description="several SR windows (GeV); empty: just `sr`")
    sb_width: float = Field(200.0, gt=0, description="CWoLa sideband width each side of the SR")
    score_range: Literal["all", "window"] = Field(
        "all", description="rows every model scores: 'all' (the whole m_jj range, what the stats "
                           "bump hunt fits) or 'window' (just the SR and its CWoLa sidebands)")
    flow_sb_width: float | None = Field(
        None, gt=0, description="background-flow sideband width; None: everything outside the SR")
    folds: int = Field(5, ge=2)
    ensemble: int = Field(2, ge=1, description="ensemble members (seeds) per fold")
    classifier: Literal["mlp", "hgb"] = "hgb"
    hgb_max_iter: int = Field(200, ge=1)
    mlp_epochs: int = Field(30, ge=1)
    batch_size: int = Field(256, ge=1)
    flow: Literal["maf", "nsf"] = "maf"
    flow_transforms: int = Field(4, ge=1)
    flow_hidden: list[int] = Field(default_factory=lambda: [64, 64], min_length=1)
    flow_epochs: int = Field(20, ge=1)
    flow_batch_size: int = Field(512, ge=1)
    flow_max_events: int | None = Field(200_000, gt=0, description="subsample the flow's sideband data")
    n_flows: int = Field(1, ge=1, description="independent background flows: the CATHODE template samples an equal mixture of them; ANODE/R-ANODE members cycle over them")
    oversample: int = Field(4, ge=1, description="CATHODE template events per SR data event")
    ranode_epochs: int = Field(30, ge=1)
    ranode_w_init: float = Field(0.01, gt=0, lt=1)
    ranode_fraction_update: Literal["em", "gradient"] = Field(
        "em", description="R-ANODE signal fraction: closed-form EM update per epoch, or Adam on logit w")
    vae_epochs: int = Field(20, ge=1, description="per-jet (V)AE epochs of vaeqr and tagntrain")
    delta_eta_sideband: float = Field(
        1.4, gt=0, description="vaeqr trains its VAE on data with |Δη| above this (all data when the "
                               "store has fewer than 1000 such events, e.g. processed with |Δη| < 1.3)")
    quak_background: str = Field("mc_bkg", description="dijet dataset of background simulation for QUAK")
    quak_signal_prior: list[str] = Field(
        default_factory=list, description="signal-simulation datasets of QUAK's prior (equal weights); "
                                          "empty: every 'mc_*' dataset except quak_background")
    quak_signal_weight: float = Field(1.0, ge=0, description="slope of QUAK's cut line: L_B - w·L_S")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    seed: int = 0
    retries: int = Field(2, ge=0, description="retries of a failed task before the job fails")
    artefacts: str | None = Field(None, description="artefact folder (default: <workdir>/train)")

    @model_validator(mode="after")
    def _check_windows(self) -> TrainConfig:
        for lo, hi in [self.sr, *self.windows]:
            if not hi > lo:
                raise ValueError(f"signal-region window ({lo}, {hi}): upper edge must exceed the lower")
        return self


class StatsConfig(_Strict):
    """Bump hunt and limits in m_jj (see :mod:`lhcad.stats`)."""

    sqrt_s: float = Field(13000.0, gt=0, description="centre-of-mass energy in GeV (x = m_jj/√s)")
    fit_range: tuple[float, float] = Field((1800.0, 7000.0), description="m_jj range of the fits (GeV)")
    resolution: tuple[float, float] = Field(
        (1.0, 0.03), description="σ(m)/m = sqrt(s²/m + c²): stochastic s (√GeV), constant c"
    )
    bin_width_sigma: float = Field(1.0, gt=0, description="bin width in units of the m_jj resolution")
    functions: list[Literal[3, 4, 5]] = Field(default_factory=lambda: [3, 4, 5])
    ftest_alpha: float = Field(0.05, gt=0, lt=1, description="F-test threshold for more parameters")
    window_width: float = Field(400.0, gt=0)
    window_step: float = Field(100.0, gt=0)
    n_windows: int = Field(9, gt=0)
    first_window: float = Field(3000.0, gt=0, description="low edge of the first SR window (GeV)")
    efficiencies: list[float] = Field(default_factory=lambda: [0.1, 0.01, 0.001])
    score: str = Field("cathode", description="AD method whose scores select events")
    score_key: str = Field(
        "auto",
        description="'auto': per-window key '<score>__<lo>_<hi>', else the method's nearest window; or one key for all",
    )
    dataset: str = Field("data", description="dijet dataset searched (other datasets are ignored)")
    toys: int = Field(1000, ge=0, description="pseudo-experiments of the global significance (pyBumpHunter)")
    limit_masses: list[float] = Field(default_factory=lambda: [2500.0, 3000.0, 3500.0, 4000.0, 4500.0, 5000.0])
    limit_efficiency: float = Field(1.0, gt=0, le=1, description="top-ε selection of the limit spectrum")
    limit_toys: int = Field(0, ge=0, description="toys per μ point for toy-based limits (0: asymptotic only)")
    luminosity: float | None = Field(None, gt=0, description="fb⁻¹; limits in fb when given, else in events")
    signal_efficiency: float = Field(1.0, gt=0, le=1, description="signal acceptance × efficiency for xs limits")
    seed: int = 0

    @model_validator(mode="after")
    def _check(self) -> StatsConfig:
        lo, hi = self.fit_range
        if not 0 < lo < hi < self.sqrt_s:
            raise ValueError(f"fit_range {self.fit_range} must satisfy 0 < lo < hi < sqrt_s")
        if any(not 0 < e <= 1 for e in self.efficiencies):
            raise ValueError(f"efficiencies {self.efficiencies} must lie in (0, 1]")
        last = self.first_window + (self.n_windows - 1) * self.window_step + self.window_width
        if self.first_window <= lo or last >= hi:
            raise ValueError(
                f"windows {self.first_window:g}..{last:g} GeV must lie inside fit_range {self.fit_range}"
            )
        return self

    def windows(self) -> list[tuple[float, float]]:
        """The SR windows (lo, hi) of the sliding-window scan."""
        return [
            (self.first_window + i * self.window_step, self.first_window + i * self.window_step + self.window_width)
            for i in range(self.n_windows)
        ]


class DQMConfig(_Strict):
    """Data-quality monitoring (``lhcad dqm``): per-LS autoencoders, thresholds, run certification."""

    monitor_elements: list[str] = Field(
        default_factory=list, description="MEs under lumi/ in the store; empty = every ME found"
    )
    models: list[Literal["dense", "lstm"]] = Field(
        default_factory=lambda: ["dense", "lstm"], min_length=1, description="AEs trained and compared"
    )
    model: Literal["dense", "lstm"] = Field("dense", description="the AE whose flags certify")
    reference: str | None = Field(None, description="golden JSON of GOOD reference LSs to train on")
    reference_runs: list[int] = Field(default_factory=list, description="GOOD reference runs to train on")
    holdout_fraction: float = Field(0.34, gt=0, lt=1, description="GOOD LSs held out for calibration")
    false_flag_rate: float = Field(1e-3, gt=0, lt=1)
    threshold_confidence: float | None = Field(
        0.9, gt=0, lt=1, description="P(true false-flag rate <= false_flag_rate) of the conformal threshold; "
        "null = the (n+1) conformal quantile (mean rate <= target); too few held-out LSs: tail fit")
    min_entries: int = Field(20, ge=0, description="fewer entries: LS marked low_stats")
    low_stats: Literal["exclude", "keep"] = Field("exclude", description="certify low-stats LSs or not")
    run_test: Literal["chi2", "ks"] = Field(
        "chi2", description="run-level test of the kept LSs vs the GOOD reference: binned χ² or Kolmogorov-Smirnov")
    run_test_alpha: float = Field(1e-3, gt=0, lt=1, description="p-value below which a run is BAD")
    run_test_syst: float = Field(0.05, ge=0, description="relative per-bin systematic in the run test")
    max_flagged_fraction: float = Field(0.5, gt=0, le=1, description="more flagged LSs: run BAD")
    dense_hidden: int = Field(32, ge=1)
    dense_latent: int = Field(4, ge=1)
    lstm_window: int = Field(16, ge=2)
    lstm_hidden: int = Field(32, ge=1)
    lstm_latent: int = Field(8, ge=1)
    epochs: int = Field(60, ge=1)
    batch_size: int = Field(128, ge=1)
    lr: float = Field(3e-3, gt=0)
    device: Literal["cpu", "cuda", "auto"] = "cpu"
    seed: int = 0
    lumi_csv: str | None = Field(None, description="brilcalc CSV; default: the generator's lumi.csv")
    max_plots: int = Field(6, ge=0, description="runs plotted (runs with flags first)")

    @model_validator(mode="after")
    def _model_trained(self) -> DQMConfig:
        if self.model not in self.models:
            raise ValueError(f"dqm.model {self.model!r} must be one of dqm.models {self.models}")
        return self


class L1Config(_Strict):
    """L1 trigger AD (models/l1_*): which models, training and evaluation settings."""

    models: list[Literal["ae", "ae_std", "vae", "invae"]] = Field(default_factory=lambda: ["ae", "vae"])
    epochs: int = Field(20, ge=1)
    train_fraction: float = Field(0.5, gt=0, lt=1, description="share of the 'sm' background used for training")
    max_train: int | None = Field(None, gt=0, description="cap on training events per model")
    fprs: list[float] = Field(default_factory=lambda: [1e-5, 1e-4, 1e-3],
                              description="FPRs for the TPR tables (1e-5 needs >= 100k held-out background)")
    seed: int = 0
    vae_beta: float = Field(1.0, gt=0, description="VAE KL weight (KL per input feature; 1: collapsed posterior, "
                            "mu^2 a one-class score; see models/l1_vae.py)")
    vae_standardise: bool = Field(True, description="VAE encoder input standardised on the training background "
                                  "(folded into the first layer when deployed); the issue-9 recipe")
    vae_free_bits: float = Field(0.0, ge=0, description="VAE free bits: KL floor per latent dimension (nats)")


class DeployConfig(_Strict):
    """Firmware stage (deploy/): QKeras QAT + pruning + hls4ml of the chosen L1 encoder."""

    model: Literal["vae", "ae"] = "vae"
    weight_bits: int | None = Field(None, ge=2, le=32, description="None: cheapest rung of deploy.ranges.BIT_LADDER "
                                    "reaching bits_target_spearman (with activation/input bits)")
    integer_bits: int | None = Field(None, ge=0, description="QKeras weight integer bits (sign excluded): "
                                     "ap_fixed<weight_bits, integer_bits+1>; None: per layer from the float ranges")
    activation_bits: int | None = Field(None, ge=2, le=32)
    activation_integer_bits: int | None = Field(None, ge=0, description="None: per layer from the float ranges")
    input_bits: int | None = Field(None, ge=2, le=32)
    input_integer_bits: int | None = Field(None, ge=1, description="ap_fixed integer bits incl. sign; None: from the input range")
    output_bits: int = Field(18, ge=2, le=32, description="bits of the network output (saturating quantized_bits)")
    bits_target_spearman: float = Field(0.99, gt=0, le=1, description="post-training-quantisation Spearman vs float "
                                        "on background that the automatic bit widths must reach")
    output_integer_bits: int | None = Field(None, ge=0, description="None: from the float output range + 2 bits headroom")
    scale_output: bool = Field(True, description="scale the VAE mu layer to unit RMS on background (ranking-preserving; deploy/ranges.py)")
    standardise_inputs: bool = Field(True, description="VAE without a saved input standardisation: fold the input RMS into "
                                    "the first layer (pruning by importance; deploy/ranges.py). A VAE trained with "
                                    "standardise=True always uses its own scale (firmware reads x / scale)")
    sparsity: float = Field(0.5, ge=0, lt=0.8, description="total pruning sparsity (first layer first, <= 80 % per layer)")
    qat_epochs: int = Field(10, ge=1)
    qat_events: int = Field(200_000, gt=0)
    check_events: int = Field(20_000, ge=1000, description="events for the C-sim vs QKeras check")
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
