"""deploy/kuberay/: every manifest is valid as a Kubernetes API server with KubeRay 1.7 would
take it, and says what we mean.

RayJob and RayCronJob (and the RayJob the plain CronJob creates) are validated against
KubeRay's own CRDs (the OpenAPI v3 schema in each, vendored in deploy/kuberay/crds/), made
strict as Kubernetes' structural schemas are: a field the schema does not name is an error
(the API server would drop it, or refuse it under strict field validation), not a silent no-op.
CEL rules (x-kubernetes-validations) are not evaluated. Core resources (CronJob, RBAC,
ServiceAccount, ConfigMap) go through kubernetes-validate's copies of Kubernetes' schemas,
strict. The rest checks intent: rayVersion is the image's Ray, GPU groups start from zero,
runs end and clean up, credentials never inline, two nights never overlap.
"""

from __future__ import annotations

import copy
import hashlib
import http.server
import json
import re
import subprocess
import sys
import threading
import zoneinfo
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dockerfile
import jsonschema
import pytest
import yaml
from kubernetes_validate import utils as kube

from conftest import SHARED

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy" / "kuberay"
CRDS = DEPLOY / "crds"
KUBERNETES = "1.33"  # the oldest Kubernetes these are meant for (CronJob timeZone: GA in 1.27)
SECRET_NAME = re.compile(r"(KEY|SECRET|TOKEN|PASSWORD|CREDENTIAL)", re.I)


def strict(schema: Any) -> Any:
    """An OpenAPI v3 structural schema as a JSON Schema that rejects unknown fields."""
    if isinstance(schema, list):
        return [strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: strict(v) for k, v in schema.items()}
    if out.pop("x-kubernetes-int-or-string", False):
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if out.pop("nullable", False) and "type" in out:
        out["type"] = [out["type"], "null"]
    preserve = out.pop("x-kubernetes-preserve-unknown-fields", False)
    if out.get("type") == "object" and not preserve and "additionalProperties" not in out:
        out["additionalProperties"] = False  # no properties either: an empty object only
    return out


OBJECT_META = {  # what a manifest may set in a top-level metadata (ObjectMeta's writable part)
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "name": {"type": "string"},
        "generateName": {"type": "string"},
        "namespace": {"type": "string"},
        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
        "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
    },
}


def crd_validator(path: Path) -> jsonschema.Draft7Validator:
    crd = yaml.safe_load(path.read_text())
    version = next(v for v in crd["spec"]["versions"] if v["storage"])
    schema = strict(version["schema"]["openAPIV3Schema"])
    schema["properties"]["metadata"] = OBJECT_META
    schema["properties"]["apiVersion"] = {"const": f"{crd['spec']['group']}/{version['name']}"}
    schema["properties"]["kind"] = {"const": crd["spec"]["names"]["kind"]}
    schema["required"] = ["apiVersion", "kind", "metadata", "spec"]
    return jsonschema.Draft7Validator(schema)


@pytest.fixture(scope="module")
def validators() -> dict[str, jsonschema.Draft7Validator]:
    return {
        "RayJob": crd_validator(CRDS / "ray.io_rayjobs.yaml"),
        "RayCronJob": crd_validator(CRDS / "ray.io_raycronjobs.yaml"),
    }


def manifests() -> list[tuple[str, dict[str, Any]]]:
    """(file name, document) for every YAML document in deploy/kuberay/ (not the CRDs)."""
    found = []
    for path in sorted(DEPLOY.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc is not None:
                found.append((path.name, doc))
    return found


def launcher_rayjob() -> dict[str, Any]:
    configmap = next(d for _, d in manifests() if d["kind"] == "ConfigMap" and "rayjob.yaml" in d["data"])
    return yaml.safe_load(configmap["data"]["rayjob.yaml"])


def validate(doc: dict[str, Any], validators: dict[str, jsonschema.Draft7Validator]) -> list[str]:
    """Every error Kubernetes (with KubeRay's CRDs) would find in `doc`, as text."""
    if doc["kind"] in validators:
        errors = validators[doc["kind"]].iter_errors(doc)
        return [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in errors]
    try:
        kube.validate(doc, KUBERNETES, strict=True)
    except kube.ValidationError as e:
        return [str(e).splitlines()[0]]
    return []


def cluster_specs() -> Iterator[tuple[str, dict[str, Any]]]:
    for name, doc in [*manifests(), ("cronjob-nightly.yaml:rayjob.yaml", launcher_rayjob())]:
        if doc["kind"] == "RayJob":
            yield name, doc["spec"]
        elif doc["kind"] == "RayCronJob":
            yield name, doc["spec"]["jobTemplate"]


def pod_specs(cluster: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield cluster["headGroupSpec"]["template"]["spec"]
    for group in cluster["workerGroupSpecs"]:
        yield group["template"]["spec"]


def test_crds_are_kuberays_v1_7_0() -> None:
    """The vendored CRDs are KubeRay 1.7.0's, byte for byte (against ../shared when present)."""
    assert "Apache License" in (CRDS / "LICENSE").read_text()
    assert "v1.7.0" in (CRDS / "NOTICE").read_text()
    for path in CRDS.glob("*.yaml"):
        crd = yaml.safe_load(path.read_text())
        assert crd["kind"] == "CustomResourceDefinition" and crd["spec"]["group"] == "ray.io"
        original = SHARED / "kuberay-v1.7.0" / path.name
        if original.exists():
            assert (
                hashlib.sha256(path.read_bytes()).digest() == hashlib.sha256(original.read_bytes()).digest()
            )


def test_every_manifest_validates(validators: dict[str, jsonschema.Draft7Validator]) -> None:
    docs = [*manifests(), ("cronjob-nightly.yaml:rayjob.yaml", launcher_rayjob())]
    kinds = sorted({d["kind"] for _, d in docs})
    assert kinds == ["ConfigMap", "CronJob", "RayCronJob", "RayJob", "Role", "RoleBinding", "ServiceAccount"]
    for name, doc in docs:
        assert validate(doc, validators) == [], f"{name}: {doc['kind']} {doc['metadata']}"


@pytest.mark.parametrize(
    ("kind", "edit", "expected"),
    [
        (
            "RayJob",
            lambda d: d["spec"].update(shutdownAfterJobFinish=True),
            "'shutdownAfterJobFinish' was unexpected",
        ),
        (
            "RayJob",
            lambda d: d["spec"]["rayClusterSpec"]["workerGroupSpecs"][0].update(minReplica=0),
            "'minReplica' was unexpected",
        ),
        (
            "RayJob",
            lambda d: d["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][
                0
            ].update(imagePullPolice="Always"),
            "'imagePullPolice' was unexpected",
        ),
        ("RayJob", lambda d: d["spec"].update(backoffLimit="2"), "'2' is not of type 'integer'"),
        ("RayCronJob", lambda d: d["spec"].update(timezone="UTC"), "'timezone' was unexpected"),
        ("RayCronJob", lambda d: d["spec"].pop("schedule"), "'schedule' is a required property"),
        ("RayCronJob", lambda d: d["metadata"].update(lables={}), "'lables' was unexpected"),
        (
            "CronJob",
            lambda d: d["spec"].update(concurrencyPolice="Forbid"),
            "'concurrencyPolice' was unexpected",
        ),
    ],
)
def test_validator_catches_mistakes(
    validators: dict[str, jsonschema.Draft7Validator], kind: str, edit: Any, expected: str
) -> None:
    doc = copy.deepcopy(next(d for _, d in manifests() if d["kind"] == kind))
    assert validate(doc, validators) == []
    edit(doc)
    errors = validate(doc, validators)
    assert any(expected in e for e in errors), errors


def test_ray_version_is_the_images() -> None:
    top = [c for c in dockerfile.parse_file(str(REPO / "docker" / "Dockerfile")) if c.cmd.upper() == "ARG"]
    image_ray = next(c.value[0].split("=")[1] for c in top if c.value[0].startswith("RAY_VERSION="))
    specs = list(cluster_specs())
    assert len(specs) == 3
    for name, spec in specs:
        cluster = spec["rayClusterSpec"]
        assert cluster["rayVersion"] == image_ray, name
        for pod in pod_specs(cluster):
            for container in pod["containers"]:
                assert f"-ray{image_ray}-" in container["image"], f"{name}: {container['image']}"
        head = cluster["headGroupSpec"]["template"]["spec"]["containers"][0]["image"]
        assert head.endswith("-cpu"), name


def test_jobs_end_clean_up_and_scale_gpus_from_zero() -> None:
    for name, spec in cluster_specs():
        assert spec["shutdownAfterJobFinishes"] is True, name
        assert 0 < spec["ttlSecondsAfterFinished"] <= 3600, name
        assert 0 < spec["activeDeadlineSeconds"] < 24 * 3600, name  # a night ends before the next
        assert spec["backoffLimit"] >= 1, name
        assert spec["entrypoint"].startswith("python /home/ray/stylekit/jobs/"), name
        cluster = spec["rayClusterSpec"]
        assert cluster["enableInTreeAutoscaling"] is True
        assert cluster["authOptions"]["mode"] == "token", "keep Ray's token authentication"
        gpu_groups = [g for g in cluster["workerGroupSpecs"] if _gpus(g) > 0]
        assert gpu_groups, name
        for group in gpu_groups:
            assert group["minReplicas"] == 0 and group["maxReplicas"] >= 1, name


def _gpus(group: dict[str, Any]) -> int:
    containers = group["template"]["spec"]["containers"]
    return sum(int(c["resources"]["limits"].get("nvidia.com/gpu", 0)) for c in containers)


def test_train_job_trains_a_style() -> None:
    job = next(d for _, d in manifests() if d["kind"] == "RayJob")
    assert "jobs/train.py" in job["spec"]["entrypoint"] and "--gpu" in job["spec"]["entrypoint"]


def test_nightly_schedules() -> None:
    cron = next(d for _, d in manifests() if d["kind"] == "RayCronJob")
    plain = next(d for _, d in manifests() if d["kind"] == "CronJob")
    for spec in (cron["spec"], plain["spec"]):
        assert len(spec["schedule"].split()) == 5
        zoneinfo.ZoneInfo(spec["timeZone"])  # a real IANA zone
        assert spec["suspend"] is False
    assert (plain["spec"]["schedule"], plain["spec"]["timeZone"]) == (
        cron["spec"]["schedule"],
        cron["spec"]["timeZone"],
    )
    assert "jobs/stylize.py" in cron["spec"]["jobTemplate"]["entrypoint"]
    # The plain route creates the very RayJob the RayCronJob would, and never two at once.
    assert launcher_rayjob()["spec"] == cron["spec"]["jobTemplate"]
    assert plain["spec"]["concurrencyPolicy"] == "Forbid"
    job = plain["spec"]["jobTemplate"]["spec"]
    assert job["backoffLimit"] == 0
    assert job["activeDeadlineSeconds"] > cron["spec"]["jobTemplate"]["activeDeadlineSeconds"]


def test_launcher_may_do_what_it_needs_and_no_more() -> None:
    docs = {(d["kind"], d["metadata"].get("name")): d for _, d in manifests()}
    pod = next(d for d in docs.values() if d["kind"] == "CronJob")["spec"]["jobTemplate"]["spec"]["template"][
        "spec"
    ]
    account = pod["serviceAccountName"]
    assert ("ServiceAccount", account) in docs
    binding = next(d for d in docs.values() if d["kind"] == "RoleBinding")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account}]
    role = docs[("Role", binding["roleRef"]["name"])]
    assert role["rules"] == [
        {"apiGroups": ["ray.io"], "resources": ["rayjobs"], "verbs": ["create", "get", "list", "watch"]}
    ]


def test_credentials_the_kubernetes_way() -> None:
    """Pods run as the stylekit service account (IRSA / workload identity), may read a Secret
    as environment, and no manifest holds a credential."""
    accounts = {d["metadata"]["name"]: d for _, d in manifests() if d["kind"] == "ServiceAccount"}
    annotations = accounts["stylekit"]["metadata"]["annotations"]
    assert "eks.amazonaws.com/role-arn" in annotations and "iam.gke.io/gcp-service-account" in annotations
    for name, spec in cluster_specs():
        for pod in pod_specs(spec["rayClusterSpec"]):
            assert pod["serviceAccountName"] == "stylekit", name
            for container in pod["containers"]:
                refs = [e["secretRef"] for e in container.get("envFrom", [])]
                assert {"name": "stylekit-object-store", "optional": True} in refs, name
    assert not [d for _, d in manifests() if d["kind"] == "Secret"]
    for name, doc in [*manifests(), ("rayjob.yaml", launcher_rayjob())]:
        for env in _all_env(doc):
            if SECRET_NAME.search(env["name"]):
                assert "value" not in env, f"{name}: {env['name']} must come from a Secret"


def _all_env(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "env" and isinstance(value, list):
                yield from value
            else:
                yield from _all_env(value)
    elif isinstance(node, list):
        for item in node:
            yield from _all_env(item)


class FakeKubernetes:
    """A loopback stand-in for the API server's RayJob endpoints: POST creates (generateName),
    each GET advances the job's status one step through `states`."""

    def __init__(self, states: list[tuple[str, str]]):
        self.states, self.created, self.gets, self.auth = states, [], 0, set()
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _reply(self, body: dict[str, Any], code: int = 200) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:
                fake.auth.add(self.headers["Authorization"])
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                assert self.path == "/apis/ray.io/v1/namespaces/nightly/rayjobs"
                body["metadata"]["name"] = body["metadata"]["generateName"] + "abcde"
                fake.created.append(body)
                self._reply(body, 201)

            def do_GET(self) -> None:
                assert self.path == "/apis/ray.io/v1/namespaces/nightly/rayjobs/stylekit-nightly-abcde"
                state = fake.states[min(fake.gets, len(fake.states) - 1)]
                fake.gets += 1
                self._reply({"status": {"jobDeploymentStatus": state[0], "jobStatus": state[1]}})

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.mark.parametrize(
    ("states", "code"),
    [
        ([("Initializing", ""), ("Running", "RUNNING"), ("Complete", "SUCCEEDED")], 0),
        ([("Running", "RUNNING"), ("Failed", "FAILED")], 1),
    ],
)
def test_launcher_creates_the_rayjob_and_returns_the_nights_status(
    tmp_path: Path, states: list[tuple[str, str]], code: int
) -> None:
    configmap = next(d for _, d in manifests() if d["kind"] == "ConfigMap")
    for name, text in configmap["data"].items():
        (tmp_path / name).write_text(text)
    sa = tmp_path / "sa"
    sa.mkdir()
    (sa / "token").write_text("t0ken\n")
    (sa / "namespace").write_text("nightly")
    fake = FakeKubernetes(states)
    try:
        result = subprocess.run(
            [sys.executable, str(tmp_path / "launch.py"), str(tmp_path / "rayjob.yaml")],
            env={"LAUNCH_API": fake.url, "LAUNCH_SA_DIR": str(sa), "LAUNCH_POLL_SECONDS": "0.05"},
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        fake.server.shutdown()
    assert result.returncode == code, result.stdout + result.stderr
    assert fake.created == [launcher_rayjob() | {"metadata": fake.created[0]["metadata"]}]
    assert fake.auth == {"Bearer t0ken"}
    assert "created RayJob nightly/stylekit-nightly-abcde" in result.stdout
    assert f"job {states[-1][1]}" in result.stdout
