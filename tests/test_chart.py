"""The Helm chart (charts/lhcad), rendered offline with Helm's own Go SDK (helm-python-sdk).

Every rendered manifest is validated against the Kubernetes OpenAPI schemas
(kubernetes-validate, strict: unknown fields fail) and the DaskJob / DaskWorkerGroup against the
CRD schemas shipped in the installed dask-kubernetes operator (check-jsonschema). The ConfigMap's
pipeline config must load with ``lhcad.config.load``.
"""

from __future__ import annotations

import copy
import itertools
import json
from pathlib import Path

import helm_python as helm
import kubernetes_validate
import pytest
import yaml
from check_jsonschema.cli.main_command import main as check_jsonschema_main
from click.testing import CliRunner

from lhcad.cluster import worker_environ
from lhcad.config import load

REPO = Path(__file__).resolve().parents[1]
CHART = REPO / "charts" / "lhcad"
RELEASE, NAMESPACE = "ana", "physics"
KUBE_VERSION = "1.33"
CRD_DIR = (
    Path(__import__("dask_kubernetes").__file__).parent
    / "operator" / "deployment" / "helm" / "dask-kubernetes-operator" / "crds"
)
OBJECT_STORE = {
    "type": "objectStore",
    "objectStore": {"url": "s3://lhcad-results/run1/", "secretName": "lhcad-s3", "endpoint": "https://s3.cern.ch"},
}


def _values(operator: bool, gpu: bool, storage: str) -> dict:
    values: dict = {"operator": {"enabled": operator}, "gpuWorker": {"enabled": gpu}}
    if storage == "objectStore":
        values["storage"] = copy.deepcopy(OBJECT_STORE)
    return values


MATRIX = [
    pytest.param(_values(op, gpu, st), id=f"{'operator' if op else 'plain'}-{'gpu' if gpu else 'cpu'}-{st}")
    for op, gpu, st in itertools.product([True, False], [False, True], ["pvc", "objectStore"])
]


@pytest.fixture(scope="module")
def chart():
    with helm.Chart.load(CHART) as loaded:
        yield loaded


def render(chart, values: dict | None) -> list[dict]:
    """All manifests the chart renders for ``values`` (NOTES.txt and empty templates dropped)."""
    out = chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    docs = []
    for path, text in sorted(out.items()):
        if path.endswith("NOTES.txt"):
            continue
        docs.extend(d for d in yaml.safe_load_all(text) if d)
    return docs


def by_kind(docs: list[dict]) -> dict[str, list[dict]]:
    kinds: dict[str, list[dict]] = {}
    for d in docs:
        kinds.setdefault(d["kind"], []).append(d)
    return kinds


def strict_crd_schema(crd_file: Path) -> dict:
    """The CRD's openAPIV3Schema as a JSON schema, with unknown fields rejected.

    The API server rejects unknown fields of a structural schema (kubectl's default strict field
    validation), so ``additionalProperties: false`` is added wherever the CRD lists properties
    and does not declare ``x-kubernetes-preserve-unknown-fields``.
    """
    crd = yaml.load(crd_file.read_text(), Loader=yaml.CSafeLoader)
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    schema = copy.deepcopy(version["schema"]["openAPIV3Schema"])

    def close(node):
        if isinstance(node, dict):
            if "properties" in node and not node.get("x-kubernetes-preserve-unknown-fields"):
                node.setdefault("additionalProperties", False)
            for value in node.values():
                close(value)
        elif isinstance(node, list):
            for value in node:
                close(value)

    close(schema)
    # apiVersion/kind/metadata are checked by the API server itself, not listed in the CRD.
    schema["properties"].update(
        {"apiVersion": {"const": f"{crd['spec']['group']}/v1"}, "kind": {"const": crd["spec"]["names"]["kind"]},
         "metadata": {"type": "object"}}
    )
    schema["required"] = sorted({*schema.get("required", []), "apiVersion", "kind", "metadata", "spec"})
    return {"$schema": "http://json-schema.org/draft-07/schema#", **schema}


@pytest.fixture(scope="module")
def crd_schemas(tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("crd")
    paths = {}
    for kind, fname in [("DaskJob", "daskjob.yaml"), ("DaskWorkerGroup", "daskworkergroup.yaml")]:
        paths[kind] = out / f"{kind}.schema.json"
        paths[kind].write_text(json.dumps(strict_crd_schema(CRD_DIR / fname)))
    return paths


def check_jsonschema(schema: Path, instances: list[Path]):
    """Run the ``check-jsonschema`` command (in-process through click, to skip interpreter start-up)."""
    return CliRunner().invoke(check_jsonschema_main, ["--schemafile", str(schema), *map(str, instances)])


def pipeline_config(docs: list[dict], tmp_path: Path):
    (cm,) = [d for d in docs if d["kind"] == "ConfigMap"]
    path = tmp_path / "config.yaml"
    path.write_text(cm["data"]["config.yaml"])
    return load(path)


def pod_specs(docs: list[dict]) -> list[tuple[str, dict]]:
    """(owner, pod spec) for every pod template in the rendered manifests."""
    specs = []
    for d in docs:
        name = f"{d['kind']}/{d['metadata']['name']}"
        if d["kind"] in ("Deployment", "Job"):
            specs.append((name, d["spec"]["template"]["spec"]))
        elif d["kind"] == "DaskJob":
            specs.append((name + ":job", d["spec"]["job"]["spec"]))
            specs.append((name + ":scheduler", d["spec"]["cluster"]["spec"]["scheduler"]["spec"]))
            specs.append((name + ":worker", d["spec"]["cluster"]["spec"]["worker"]["spec"]))
        elif d["kind"] == "DaskWorkerGroup":
            specs.append((name, d["spec"]["worker"]["spec"]))
    return specs


# ------------------------------------------------------------------------------------------ lint
def test_chart_metadata_and_schema_are_loaded(chart):
    assert chart.metadata["apiVersion"] == "v2"
    assert chart.name == "lhcad"
    assert chart.schema is not None and chart.schema["additionalProperties"] is False
    chart.validate_schema(chart.values)


@pytest.mark.parametrize("values", [None, *MATRIX])
def test_lint_strict(values):
    report = helm.lint(CHART, values, strict=True, namespace=NAMESPACE, kube_version="v1.33.0")
    assert report["total_charts_linted"] == 1
    problems = [m for m in report["messages"] if m["severity"] >= 2] + report["errors"]
    assert not problems, problems


# ------------------------------------------------------------------------------ render matrix
@pytest.mark.parametrize("values", MATRIX)
def test_render_matrix_is_valid_kubernetes(chart, values, tmp_path):
    docs = render(chart, values)
    kinds = by_kind(docs)
    operator = values["operator"]["enabled"]
    gpu = values["gpuWorker"]["enabled"]
    pvc = "storage" not in values

    expected = {"ConfigMap": 1}
    if operator:
        expected |= {"DaskJob": 1} | ({"DaskWorkerGroup": 1} if gpu else {})
    else:
        expected |= {"Deployment": 3 if gpu else 2, "Service": 1, "Job": 1}
    if pvc:
        expected["PersistentVolumeClaim"] = 1
    assert {k: len(v) for k, v in kinds.items()} == expected

    # Every built-in kind validates against the Kubernetes OpenAPI schema (unknown fields fail).
    for d in docs:
        if d["apiVersion"].startswith("kubernetes.dask.org/"):
            continue
        kubernetes_validate.validate(d, KUBE_VERSION, strict=True)

    # The config in the ConfigMap is a valid lhcad config pointed at this release's scheduler.
    cfg = pipeline_config(docs, tmp_path)
    assert cfg.cluster.type == "dask-address"
    assert cfg.cluster.address == f"tcp://{RELEASE}-lhcad-scheduler.{NAMESPACE}.svc.cluster.local:8786"
    assert cfg.cluster.workers == 2 + (1 if gpu else 0)
    assert cfg.cluster.timeout == 300
    if pvc:
        assert (cfg.store, cfg.workdir) == ("/data/store.zarr", "/data/results")
    else:
        assert (cfg.store, cfg.workdir) == ("s3://lhcad-results/run1/store.zarr", "s3://lhcad-results/run1/results")

    # Every pod runs non-root with the chart's image; storage reaches the runner and every worker.
    specs = pod_specs(docs)
    assert len(specs) == 3 + (1 if gpu else 0)  # runner, scheduler, workers (+ GPU workers)
    for owner, spec in specs:
        assert spec["securityContext"]["runAsNonRoot"] is True, owner
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        for c in spec["containers"]:
            assert c["image"] == "ghcr.io/lhcad/lhcad:0.1.0", owner
            if c["name"] == "scheduler":
                continue
            mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
            if pvc:
                assert mounts["data"] == "/data", owner
                assert volumes["data"]["persistentVolumeClaim"]["claimName"] == f"{RELEASE}-lhcad-data"
            else:
                assert "data" not in mounts, owner
                assert c["envFrom"] == [{"secretRef": {"name": "lhcad-s3"}}], owner
                assert {"name": "AWS_ENDPOINT_URL", "value": "https://s3.cern.ch"} in c["env"], owner
            if c["name"] == "worker":  # the allocator settings lhcad's own LocalCluster gives its workers
                env = {e["name"]: e.get("value") for e in c["env"]}
                assert {k: env.get(k) for k in worker_environ()} == worker_environ(), owner
            if c["name"] == "lhcad":
                assert c["command"] == ["lhcad"] and c["args"] == ["run", "/config/config.yaml"], owner
                assert mounts["config"] == "/config"
                assert volumes["config"]["configMap"]["name"] == f"{RELEASE}-lhcad-config"

    # GPU workers: GPU limits, tolerations, node selector and a Dask resource to schedule on.
    gpu_specs = [s for o, s in specs if "gpu" in o]
    assert len(gpu_specs) == (1 if gpu else 0)
    for spec in gpu_specs:
        (c,) = spec["containers"]
        assert c["resources"]["limits"]["nvidia.com/gpu"] == "1"
        assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec["tolerations"]
        assert spec["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
        assert c["args"][-2:] == ["--resources", "GPU=1"]
    for owner, spec in specs:
        if "gpu" not in owner:
            assert all("nvidia.com/gpu" not in c["resources"].get("limits", {}) for c in spec["containers"])


def test_plain_mode_wires_job_workers_and_service_to_one_scheduler(chart, tmp_path):
    docs = render(chart, {"operator": {"enabled": False}, "gpuWorker": {"enabled": True}})
    kinds = by_kind(docs)
    cfg = pipeline_config(docs, tmp_path)
    (svc,) = kinds["Service"]
    deployments = {d["metadata"]["name"]: d for d in kinds["Deployment"]}
    scheduler = deployments[f"{RELEASE}-lhcad-scheduler"]
    pod_labels = scheduler["spec"]["template"]["metadata"]["labels"]
    # The Service selects exactly the scheduler pods, on the ports the scheduler listens on.
    assert svc["metadata"]["name"] == f"{RELEASE}-lhcad-scheduler"
    assert svc["spec"]["selector"].items() <= pod_labels.items()
    for name, d in deployments.items():
        if name != scheduler["metadata"]["name"]:
            assert not svc["spec"]["selector"].items() <= d["spec"]["template"]["metadata"]["labels"].items()
    ports = {p["name"] for p in scheduler["spec"]["template"]["spec"]["containers"][0]["ports"]}
    assert {p["targetPort"] for p in svc["spec"]["ports"]} <= ports
    # Workers and the runner's config use the Service's in-cluster DNS name.
    host = f"{svc['metadata']['name']}.{NAMESPACE}.svc.cluster.local:8786"
    assert cfg.cluster.address == f"tcp://{host}"
    for name in (f"{RELEASE}-lhcad-worker", f"{RELEASE}-lhcad-gpu-worker"):
        (c,) = deployments[name]["spec"]["template"]["spec"]["containers"]
        assert c["command"] == ["dask", "worker"] and c["args"][0] == f"tcp://{host}"
    (job,) = kinds["Job"]
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"
    assert job["spec"]["backoffLimit"] == 2


def test_operator_mode_address_matches_the_operator(chart, tmp_path):
    """The runner's config points where the dask-kubernetes operator puts the scheduler."""
    from dask_kubernetes.operator.controller.controller import build_job_pod_spec

    docs = render(chart, {"gpuWorker": {"enabled": True}})
    kinds = by_kind(docs)
    (job,) = kinds["DaskJob"]
    name = job["metadata"]["name"]
    # daskjob_create names the cluster after the job; build_job_pod_spec injects its address.
    pod = build_job_pod_spec(name, name, NAMESPACE, job["spec"]["job"]["spec"], {}, {})
    env = {e["name"]: e.get("value") for e in pod["spec"]["containers"][0]["env"]}
    assert pipeline_config(docs, tmp_path).cluster.address == env["DASK_SCHEDULER_ADDRESS"]
    service = job["spec"]["cluster"]["spec"]["scheduler"]["service"]
    assert service["selector"] == {"dask.org/cluster-name": name, "dask.org/component": "scheduler"}
    (wg,) = kinds["DaskWorkerGroup"]
    assert wg["spec"]["cluster"] == name
    # Operator workers take the scheduler from DASK_SCHEDULER_ADDRESS and their name from the operator.
    (worker,) = job["spec"]["cluster"]["spec"]["worker"]["spec"]["containers"]
    assert worker["args"][:2] == ["--name", "$(DASK_WORKER_NAME)"]
    assert job["spec"]["cluster"]["spec"]["worker"]["replicas"] == 2


def test_dask_resources_validate_against_operator_crds(chart, crd_schemas, tmp_path):
    files: dict[str, list[Path]] = {"DaskJob": [], "DaskWorkerGroup": []}
    for i, param in enumerate(MATRIX):
        for d in render(chart, param.values[0]):
            if d["kind"] in files:
                path = tmp_path / f"{i}-{d['kind']}.json"
                path.write_text(json.dumps(d))
                files[d["kind"]].append(path)
    assert len(files["DaskJob"]) == 4 and len(files["DaskWorkerGroup"]) == 2
    for kind, paths in files.items():
        result = check_jsonschema(crd_schemas[kind], paths)
        assert result.exit_code == 0, result.output

    # The check is not vacuous: a misspelt field and a wrong type are rejected.
    bad = json.loads(files["DaskJob"][0].read_text())
    bad["spec"]["cluster"]["spec"]["worker"]["replica"] = 2
    bad["spec"]["cluster"]["spec"]["scheduler"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "x"
    bad_path = tmp_path / "bad-daskjob.json"
    bad_path.write_text(json.dumps(bad))
    result = check_jsonschema(crd_schemas["DaskJob"], [bad_path])
    assert result.exit_code == 1
    assert "replica" in result.output and "containerPort" in result.output


def test_kubernetes_validate_rejects_a_broken_manifest(chart):
    (dep, *_) = [d for d in render(chart, {"operator": {"enabled": False}}) if d["kind"] == "Deployment"]
    dep["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError, match="replicas|two"):
        kubernetes_validate.validate(dep, KUBE_VERSION, strict=True)


# --------------------------------------------------------------------------- config and filesets
def test_values_config_and_filesets_reach_the_configmap(chart, tmp_path):
    fileset = {"data": {"files": {"root://eospublic.cern.ch//eos/opendata/cms/x.root": "Events"},
                        "metadata": {"is_data": True}}}
    values = {
        "config": {"name": "opendata", "stages": ["process", "train"], "workdir": "/data/opendata",
                   "process": {"dijet": "/config/opendata.json", "lumi": None, "l1": None},
                   "train": {"methods": ["cwola"], "folds": 3}},
        "filesets": {"opendata.json": fileset},
        "worker": {"replicas": 5, "threads": 4},
        "job": {"connectTimeout": 30},
    }
    docs = render(chart, values)
    cfg = pipeline_config(docs, tmp_path)
    assert cfg.name == "opendata" and cfg.stages == ["process", "train"]
    assert cfg.workdir == "/data/opendata" and cfg.store == "/data/store.zarr"  # given vs. defaulted
    assert cfg.process.dijet == "/config/opendata.json" and cfg.process.lumi is None
    assert (cfg.train.methods, cfg.train.folds) == (["cwola"], 3)
    assert (cfg.cluster.workers, cfg.cluster.threads_per_worker, cfg.cluster.timeout) == (5, 4, 30)
    (cm,) = [d for d in docs if d["kind"] == "ConfigMap"]
    assert json.loads(cm["data"]["opendata.json"]) == fileset
    (job,) = [d for d in docs if d["kind"] == "DaskJob"]
    (worker,) = job["spec"]["cluster"]["spec"]["worker"]["spec"]["containers"]
    assert worker["args"][worker["args"].index("--nthreads") + 1] == "4"
    # A changed config changes the checksum annotation (so an upgrade re-creates the job).
    other = render(chart, {**values, "config": {**values["config"], "name": "other"}})
    (job2,) = [d for d in other if d["kind"] == "DaskJob"]
    assert job["metadata"]["annotations"]["checksum/config"] != job2["metadata"]["annotations"]["checksum/config"]


def test_an_invalid_lhcad_config_in_values_is_caught_by_lhcad(chart, tmp_path):
    """The chart passes the config through; lhcad itself names the bad key in one line."""
    from lhcad.config import ConfigError

    docs = render(chart, {"config": {"train": {"folds": 1, "epohcs": 3}}})
    with pytest.raises(ConfigError) as err:
        pipeline_config(docs, tmp_path)
    assert "train.folds" in str(err.value) and "train.epohcs: unknown key" in str(err.value)


# ------------------------------------------------------------------------------ values schema
BAD_VALUES = [
    ({"worker": {"replicas": "two", "threads": 1}}, "replicas"),
    ({"storage": {"type": "nfs"}}, "type"),
    ({"storage": {"type": "objectStore", "objectStore": {"url": ""}}}, "url"),
    ({"storage": {"type": "objectStore", "objectStore": {"url": "bucket/no-scheme"}}}, "url"),
    ({"config": {"cluster": {"type": "dask-local"}}}, "config/cluster"),
    ({"workers": 3}, "workers"),
    ({"gpuWorker": {"enabled": True, "gpus": 0}}, "gpus"),
    ({"image": {"repository": "x", "pullPolicy": "Sometimes"}}, "pullPolicy"),
]


@pytest.mark.parametrize("values,key", BAD_VALUES, ids=[k for _, k in BAD_VALUES])
def test_bad_values_fail_the_schema(chart, values, key):
    with pytest.raises(helm.HelmValuesError, match=key):
        chart.validate_schema(chart.merge_values(values))
    report = helm.lint(CHART, values, strict=True)
    assert report["errors"] or any(m["severity"] == 3 for m in report["messages"])


def test_bad_values_file_fails_lint(tmp_path):
    """A values file as a user writes it (-f values.yaml) is rejected before anything renders."""
    bad = tmp_path / "values.yaml"
    bad.write_text("operator:\n  enabled: yes-please\nworker:\n  replicas: -1\n  threads: 1\n")
    report = helm.lint(CHART, helm.values_from_yaml(bad.read_text()), strict=True)
    text = json.dumps(report)
    assert "enabled" in text and "replicas" in text
    assert any(m["severity"] == 3 for m in report["messages"]) or report["errors"]
