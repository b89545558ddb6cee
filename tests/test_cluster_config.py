"""cluster.yaml: valid for the installed Ray's cluster launcher, and says what we mean.

Validation is Ray's own: the JSON schema shipped in ray/autoscaler/ray-schema.json, then the
defaults-filling and checks `ray up` runs before it talks to AWS (prepare_config +
validate_config). The rest checks intent: a head that takes no GPU (or CPU) work, spot GPU
workers, Ray's GPU image at the installed Ray version, stylekit installed by the setup
commands from a wheel that `pip wheel` really produces, S3 through instance profiles, and
token authentication on every node.
"""

from __future__ import annotations

import copy
import fnmatch
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import ray
import ray.autoscaler
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

REPO = Path(__file__).resolve().parents[1]
CLUSTER_YAML = REPO / "cluster.yaml"
GPU_FAMILIES = ("g4dn.", "g5.", "g6.", "g6e.", "gr6.", "p3.", "p4d.", "p4de.", "p5.", "p5e.", "p5en.", "p6")


@pytest.fixture(scope="module")
def config() -> dict[str, Any]:
    loaded = yaml.safe_load(CLUSTER_YAML.read_text())
    assert isinstance(loaded, dict), "cluster.yaml must be a YAML mapping"
    return loaded


def _head(config: dict[str, Any]) -> dict[str, Any]:
    return config["available_node_types"][config["head_node_type"]]


def _workers(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    types = config["available_node_types"]
    return {name: t for name, t in types.items() if name != config["head_node_type"]}


def test_matches_rays_cluster_config_schema(config: dict[str, Any]) -> None:
    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    jsonschema.validate(config, schema)


def test_passes_ray_up_config_checks(config: dict[str, Any]) -> None:
    # What `ray up` does first (commands._bootstrap_config), short of calling AWS.
    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    assert prepared["provider"]["type"] == "aws"


def test_every_key_is_commented() -> None:
    """Each `key:` line has a comment on the line above (or its own)."""
    lines = CLUSTER_YAML.read_text().splitlines()
    key = re.compile(r"^\s*(?:-\s+)?[\w./~-]+:(\s|$)")
    bare = []
    for i, line in enumerate(lines):
        if line.lstrip().startswith("#") or not key.match(line):
            continue
        above = lines[i - 1].strip() if i else ""
        if not (above.startswith("#") or " #" in line):
            bare.append(f"{i + 1}: {line.strip()}")
    assert not bare, "keys without a comment:\n" + "\n".join(bare)


def test_head_schedules_no_gpu_or_cpu_work(config: dict[str, Any]) -> None:
    head = _head(config)
    assert head["resources"].get("GPU") == 0, "the head must advertise no GPUs"
    # CPU 0 too: training workers and Ray Data tasks go to the GPU nodes; the driver and
    # the control plane need no CPU resource (see the comment in cluster.yaml).
    assert head["resources"].get("CPU") == 0
    assert not head["node_config"]["InstanceType"].startswith(GPU_FAMILIES)
    assert head.get("max_workers", 0) == 0


def test_gpu_workers_scale_and_use_spot(config: dict[str, Any]) -> None:
    workers = _workers(config)
    assert len(workers) >= 1
    for name, node_type in workers.items():
        node = node_type["node_config"]
        assert node["InstanceType"].startswith(GPU_FAMILIES), f"{name}: not a GPU instance type"
        assert node_type["resources"].get("GPU", 0) >= 1, f"{name}: advertises no GPU"
        assert 0 <= node_type["min_workers"] <= node_type["max_workers"] <= config["max_workers"]
        assert node["InstanceMarketOptions"]["MarketType"] == "spot", f"{name}: spot not allowed"


def test_docker_image_is_rays_gpu_image_at_the_installed_version(config: dict[str, Any]) -> None:
    docker = config["docker"]
    images = {
        docker["image"],
        docker.get("head_image", docker["image"]),
        docker.get("worker_image", docker["image"]),
    }
    for image in images:
        repo, _, tag = image.partition(":")
        assert repo == "rayproject/ray", f"{image}: use Ray's own image (ray-ml is deprecated)"
        version, *variants = tag.split("-")
        assert version == ray.__version__, (
            f"{image}: the cluster's Ray should be the Ray you submit with ({ray.__version__})"
        )
        assert any(v == "gpu" or re.fullmatch(r"cu\d+", v) for v in variants), f"{image}: not a GPU tag"
        assert any(re.fullmatch(r"py3\d+", v) for v in variants), f"{image}: pin the Python version"


def test_docker_region_matches_provider(config: dict[str, Any]) -> None:
    options = " ".join(config["docker"].get("run_options", []))
    assert f"AWS_REGION={config['provider']['region']}" in options


def test_every_node_type_has_an_instance_profile(config: dict[str, Any]) -> None:
    for name, node_type in config["available_node_types"].items():
        profile = node_type["node_config"].get("IamInstanceProfile", {})
        assert profile.get("Name") or profile.get("Arn"), f"{name}: no IamInstanceProfile (S3 access)"


def test_token_auth_on_every_node(config: dict[str, Any]) -> None:
    assert config["file_mounts"].get("/home/ray/.ray") == "~/.ray", "the token must reach every node"
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        start = [c for c in config[key] if "ray start" in c]
        assert start and all("RAY_AUTH_MODE=token" in c for c in start), key


def test_file_mounts_are_directories(config: dict[str, Any]) -> None:
    # Docker keeps a replaced single-file bind mount at its old content.
    for remote, local in config["file_mounts"].items():
        assert not (REPO / Path(local).expanduser()).is_file(), f"{remote}: mount a directory, not a file"


def test_setup_commands_install_the_wheel_pip_builds(config: dict[str, Any], tmp_path: Path) -> None:
    """The documented build (`pip wheel --no-deps -w dist .`) yields exactly one file that
    the setup command's pip install glob picks up, from the folder mounted there."""
    installs = [c for c in config["setup_commands"] if "pip install" in c and "stylekit" in c]
    assert len(installs) == 1, "setup_commands must pip install stylekit"
    target = installs[0].split()[-1]
    mount = next((r for r in config["file_mounts"] if target.startswith(r.rstrip("/") + "/")), None)
    assert mount is not None, f"{target} is not under any file_mounts path"
    assert config["file_mounts"][mount] == "./dist"

    src = tmp_path / "src"  # build from a copy: the checkout stays untouched
    shutil.copytree(REPO / "stylekit", src / "stylekit", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", src)
    dist = tmp_path / "dist"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(dist),
            str(src),
        ],
        check=True,
        timeout=300,
    )
    pattern = target[len(mount.rstrip("/")) + 1 :]
    built = sorted(p.name for p in dist.iterdir())
    assert len(fnmatch.filter(built, pattern)) == 1, f"{pattern} should match one of {built}"
