"""The output guard (stylekit/files/locations.py): no spelling of an input passes as an output of
any command that writes, locally (relative paths, '.', '..', doubled and trailing separators,
file:// and local://, a symlink to the folder) or remotely (scheme case and aliases, trailing
and doubled slashes, '.' and '..', credentials in the URL), and the probes that once replaced a
user's photos end with the photo unchanged and one line."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from conftest import PYTHON, REPO
from stylekit.bulk.config import BulkConfig
from stylekit.cli import config_from_flags
from stylekit.commands.export import ExportConfig
from stylekit.commands.optimize import OptimizeConfig
from stylekit.commands.sheet import SheetConfig
from stylekit.commands.stylize import StylizeConfig
from stylekit.commands.video import VideoConfig
from stylekit.files import locations
from stylekit.files.locations import Overlap, Place, refuse_overlaps

SETTINGS = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """root/photos/{a.jpg, sub/b.jpg}, root/link -> photos, root/other/."""
    root = tmp_path_factory.mktemp("guard")
    (root / "photos" / "sub").mkdir(parents=True)
    for name in ("photos/a.jpg", "photos/sub/b.jpg"):
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(root / name)
    (root / "other").mkdir()
    (root / "link").symlink_to(root / "photos")
    return root


@st.composite
def local_spelling(draw: st.DrawFn, root: Path, rel: str) -> str:
    """One of the many ways to write root/rel (rel: '/'-separated, '' for root itself)."""
    parts = [p for p in rel.split("/") if p]
    if parts and parts[0] == "photos" and draw(st.booleans()):
        parts[0] = "link"  # through the symlink
    spelled: list[str] = []
    for part in parts:
        for _ in range(draw(st.integers(0, 2))):
            spelled.append(draw(st.sampled_from([".", "other/..", "nothing-here/..", "photos/.."])))
        spelled.append(part)
    base = draw(st.sampled_from(["abs", "rel", "file", "local"]))
    sep = draw(st.sampled_from(["/", "//"]))
    start = str(root) if base != "rel" else os.path.relpath(root)
    text = sep.join([start, *spelled]) + draw(st.sampled_from(["", "/", "//", "/."]))
    if base == "file":
        return "file://" + os.path.abspath(start) + text[len(start) :]
    if base == "local":
        return "local://" + os.path.abspath(start) + text[len(start) :]
    return text


@st.composite
def remote_spelling(draw: st.DrawFn, scheme: str, bucket: str, key: str) -> str:
    aliases = {"s3": ["s3", "S3", "s3a"], "gs": ["gs", "GS", "gcs"], "az": ["az", "abfs", "abfss"]}[scheme]
    parts: list[str] = []
    for part in key.split("/"):
        for _ in range(draw(st.integers(0, 2))):
            parts.append(draw(st.sampled_from([".", "", "x/.."])))
        parts.append(part)
    user = draw(st.sampled_from(["", "KEY:wJalr/K7MD@", "user:p%40ss@"])) if scheme == "s3" else ""
    host = draw(st.sampled_from([bucket, bucket.upper()]))
    return (
        f"{draw(st.sampled_from(aliases))}://{user}{host}/"
        + "/".join(parts)
        + draw(st.sampled_from(["", "/"]))
    )


def _refused(make: Any) -> str:
    with pytest.raises(Overlap) as e:
        make()
    message = str(e.value)
    assert "\n" not in message and "--" in message
    return message


@SETTINGS
@given(data=st.data())
def test_no_spelling_of_an_input_file_passes_as_an_output(tree: Path, data: st.DataObject) -> None:
    photo = str(tree / "photos" / "a.jpg")
    as_file = data.draw(local_spelling(tree, "photos/a.jpg"))
    as_folder = data.draw(local_spelling(tree, "photos"))  # --output its folder: a/.jpg lands on it
    out = data.draw(st.sampled_from([as_file, as_folder]))
    _refused(lambda: StylizeConfig(model="m.safetensors", output=out, inputs=(photo,)))
    _refused(
        lambda: StylizeConfig(model="m.safetensors", output=as_folder, inputs=(photo, str(tree / "x.png")))
    )
    _refused(lambda: OptimizeConfig(style=str(tree / "s.jpg"), output=out, inputs=(photo,)))
    _refused(lambda: OptimizeConfig(style=photo, output=as_file, inputs=(str(tree / "c.jpg"),)))
    _refused(lambda: SheetConfig(models=("m",), output=as_file.rstrip("/."), photos=(photo,)))
    _refused(lambda: ExportConfig(model=photo, output=as_file, format="onnx"))
    _refused(lambda: VideoConfig(model="m", output=as_file, input=photo))


@SETTINGS
@given(data=st.data())
def test_no_spelling_of_in_or_a_folder_above_it_passes_as_the_bulk_jobs_output(
    tree: Path, data: st.DataObject
) -> None:
    inp = data.draw(local_spelling(tree, "photos"))
    out = data.draw(st.one_of(local_spelling(tree, "photos"), local_spelling(tree, "")))
    _refused(lambda: BulkConfig(model="m.safetensors", input=inp, output=out))
    # The model or key list inside OUT: results could land on them
    model = data.draw(local_spelling(tree, "photos/sub/b.jpg"))
    _refused(lambda: BulkConfig(model=model, input=str(tree / "other"), output=str(tree / "photos")))


@SETTINGS
@given(data=st.data())
def test_no_spelling_of_a_remote_input_passes(data: st.DataObject) -> None:
    scheme = data.draw(st.sampled_from(["s3", "gs", "az"]))
    inp = data.draw(remote_spelling(scheme, "photos-bucket", "nights/in"))
    out = data.draw(
        st.one_of(
            remote_spelling(scheme, "photos-bucket", "nights/in"),
            remote_spelling(scheme, "photos-bucket", "nights"),
        )
    )
    _refused(lambda: BulkConfig(model="m.safetensors", input=inp, output=out))
    key = data.draw(remote_spelling(scheme, "photos-bucket", "nights/in/a.jpg"))
    _refused(
        lambda: StylizeConfig(
            model="m.safetensors", output=key, inputs=(f"{scheme}://photos-bucket/nights/in/a.jpg",)
        )
    )


def test_neighbours_and_out_inside_in_pass(tree: Path) -> None:
    """What is not an overlap passes: a sibling folder, a name that only starts the same, OUT
    inside IN for the bulk job (its keys are left out of IN's listing), another bucket."""
    photos = str(tree / "photos")
    for out in (str(tree / "other"), photos + "-styled", photos + "/styled"):
        BulkConfig(model="m.safetensors", input=photos, output=out)
    BulkConfig(model="m.safetensors", input="s3://b/photos", output="s3://b/photos2")
    BulkConfig(model="m.safetensors", input="s3://b/photos", output="s3://c/photos")
    BulkConfig(model="m.safetensors", input="s3://b/photos", output="gs://b/photos")
    StylizeConfig(
        model="m.safetensors", output=str(tree / "photos" / "a_styled.jpg"), inputs=(photos + "/a.jpg",)
    )


def test_the_same_file_by_device_and_inode(tree: Path, tmp_path: Path) -> None:
    """A hard link (or a bind mount, a case-insensitive disk) is the same file whatever its
    path says."""
    linked = tmp_path / "same.jpg"
    os.link(tree / "photos" / "a.jpg", linked)
    _refused(lambda: StylizeConfig(model="m", output=str(linked), inputs=(str(tree / "photos" / "a.jpg"),)))
    assert locations.below(str(linked), str(tree / "photos" / "a.jpg")) == ()


def test_the_guard_looks_at_each_folder_once(tree: Path) -> None:
    """Thousands of inputs and outputs: a stat per folder level, never one per pair."""
    reads = [Place("INPUT", str(tree / "photos" / f"p{i}.jpg")) for i in range(3000)]
    writes = [Place("--output", str(tree / "other" / f"p{i}.jpg")) for i in range(3000)]
    refuse_overlaps(reads, writes)


# --- the probes -------------------------------------------------------------------------------


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _stylize(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PYTHON, "-m", "stylekit", "stylize", "--model", "starry_night", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_stylize_never_replaces_its_input(tmp_path: Path) -> None:
    photos = tmp_path / "in"
    photos.mkdir()
    for name in ("a.jpg", "b.jpg"):
        Image.fromarray(np.full((8, 8, 3), 90, np.uint8)).save(photos / name)
    before = {p: _digest(p) for p in photos.iterdir()}
    a, b = str(photos / "a.jpg"), str(photos / "b.jpg")
    for args in ([a, "--output", a], [a, "--output", str(photos)], [a, b, "--output", str(photos) + "/"]):
        run = _stylize(*args)
        assert run.returncode == 2, run.stderr
        (line,) = run.stderr.strip().splitlines()
        assert line.startswith("error: --output") and "INPUT" in line
    assert {p: _digest(p) for p in photos.iterdir()} == before


def test_stylize_into_a_folder_spelled_as_one_with_one_input(tmp_path: Path) -> None:
    from stylekit.__main__ import main

    photo = tmp_path / "a.png"
    Image.fromarray(np.full((8, 8, 3), 90, np.uint8)).save(photo)
    out = tmp_path / "out"
    assert main(["stylize", "--model", "starry_night", "--output", f"{out}/", str(photo)]) == 0
    assert (out / "a.png").is_file()


def test_the_bulk_job_refuses_in_inside_out_and_another_spelling_of_in(tmp_path: Path) -> None:
    nest = tmp_path / "nest"
    (nest / "p" / "p").mkdir(parents=True)
    for name in ("p/q.jpg", "p/p/q.jpg"):
        Image.fromarray(np.full((8, 8, 3), 30, np.uint8)).save(nest / name)
    before = {p: _digest(p) for p in nest.rglob("*.jpg")}
    job = str(REPO / "jobs" / "stylize.py")
    for inp, out in ((nest / "p", nest), (nest / "p", f"local://{nest / 'p'}")):
        run = subprocess.run(
            [PYTHON, job, "--input", str(inp), "--output", str(out), "--overwrite", "--engine", "local"],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert run.returncode == 2, run.stderr
        (line,) = run.stderr.strip().splitlines()
        assert line.startswith("error: ") and "--output" in line
    assert {p: _digest(p) for p in nest.rglob("*.jpg")} == before
    assert not (nest / "_manifest").exists()


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        ({"input": "in", "output": "in/../in/"}, "must differ"),
        ({"input": "s3://b/in", "output": "s3a://b/in/"}, "must differ"),
        ({"input": "in/p", "output": "in"}, "lies inside --output"),
        ({"input": "in", "output": "out", "keys": "out/keys.txt"}, "--keys"),
    ],
)
def test_bulk_overlaps_are_config_errors(flags: dict[str, Any], message: str) -> None:
    with pytest.raises(Overlap, match=message):
        config_from_flags(BulkConfig, model="m.safetensors", **flags)
