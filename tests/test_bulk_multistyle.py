"""The bulk job with several --style selections of a multi-style model: each input read once,
a folder of results per selection (OUT/<label>/KEY) with the pixels of `python -m stylekit
stylize --style`, a manifest row per input and selection, reruns incremental per selection, and
the guards (settings, outputs, videos) on both engines."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from stylekit.bulk.config import BulkConfig
from stylekit.cli import config_from_flags
from stylekit.errors import ConfigError, StylekitError

REPO = Path(__file__).resolve().parents[1]
NAMES = ("a", "b", "c")
BLEND = "a:0.7+b:0.3"


def _png(seed: int, w: int = 20, h: int = 16) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def three(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny three-style model (styles a, b, c), saved as training saves one."""
    from test_multistyle import multi_style

    from stylekit.nn.modelio import save_model

    path = tmp_path_factory.mktemp("model") / "three.safetensors"
    entries = [{"name": n, "painting": f"/paintings/{n}.jpg", "digest": "0" * 16} for n in NAMES]
    save_model(
        str(path), multi_style(3), {"format": "stylekit", "task": "style", "styles": json.dumps(entries)}
    )
    return path


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    """A fresh local Ray with 2 CPUs, as the other bulk tests start one."""
    import ray

    if ray.is_initialized():
        ray.shutdown()
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield
    ray.shutdown()


def _inputs(root: Path, n: int = 5) -> dict[str, bytes]:
    files = {f"d/p{i}.png": _png(i, 16 + 4 * (i % 2), 16) for i in range(n)} | {"bad.png": b"not a png"}
    for key, data in files.items():
        (root / key).parent.mkdir(parents=True, exist_ok=True)
        (root / key).write_bytes(data)
    return files


def _bulk(**kw: Any) -> Any:
    from stylekit.bulk.night import run_night

    return run_night(config_from_flags(BulkConfig, progress_every=1.0, **kw))


def _rows(summary: Any) -> list[dict[str, Any]]:
    return pq.read_table(summary.manifest).to_pylist()


def _cli(model: Path, style: str, out: Path, inputs: list[Path]) -> None:
    from stylekit.__main__ import main

    assert (
        main(["stylize", "--model", str(model), "--style", style, "--output", f"{out}/", *map(str, inputs)])
        == 0
    )


def _pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path))


def _mtimes(out: Path) -> dict[str, int]:
    return {
        str(p.relative_to(out)): p.stat().st_mtime_ns
        for p in out.rglob("*.png")
        if "_manifest" not in p.parts
    }


@pytest.mark.parametrize("engine", ["local", "ray"])
def test_every_style_from_one_read_with_the_cli_pixels_and_reruns_per_style(
    engine: str, three: Path, tmp_path: Path, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    if engine == "ray":
        request.getfixturevalue("local_ray")
    from stylekit.bulk.engines import rows

    src, out = tmp_path / "in", tmp_path / "out"
    files = _inputs(src)
    reads: list[str] = []
    real = rows.RowContext.read

    def counted(self: Any, key: str) -> Any:
        reads.append(key)
        return real(self, key)

    if engine == "local":  # in this process: count the reads (Ray's actors count their own)
        monkeypatch.setattr(rows.RowContext, "read", counted)
    common = {"model": str(three), "input": str(src), "output": str(out), "engine": engine, "batch_size": 2}
    first = _bulk(**common, style="a,b")
    assert (first.ok, first.failed, first.skipped) == (10, 2, 0)  # 5 photos and a bad one, x 2 styles
    if engine == "local":
        assert sorted(reads) == sorted(files)  # each input read once for both styles
    manifest = _rows(first)
    assert sorted((Path(r["input"]).name, r["style"]) for r in manifest) == sorted(
        (Path(k).name, s) for k in files for s in ("a", "b")
    )
    assert all(r["output"].endswith(f"/{r['style']}/" + r["input"][len(str(src)) + 1 :]) for r in manifest)
    assert {p.name for p in out.iterdir()} == {"a", "b", "_manifest"}  # nothing at OUT/KEY
    from stylekit.bulk.report.runs import summarize
    from stylekit.files.storage import StorageOptions

    by_style = summarize(str(out), first.run_id, StorageOptions()).per_style
    assert by_style == {s: {"ok": 5, "failed": 1, "skipped": 0} for s in ("a", "b")}
    assert "Outputs by style" in (out / "_manifest" / f"run={first.run_id}" / "_report.html").read_text()
    photos = sorted(src.glob("d/*.png"))
    for style in ("a", "b"):
        _cli(three, style, tmp_path / f"cli-{style}", photos)
        for photo in photos:
            got, want = (
                _pixels(out / style / "d" / photo.name),
                _pixels(tmp_path / f"cli-{style}" / photo.name),
            )
            assert np.array_equal(got, want), (style, photo.name)
    before = _mtimes(out)
    reads.clear()
    more = _bulk(**common, style=f"a,b,c,{BLEND}")  # two styles more: only they are done
    assert (more.ok, more.failed, more.skipped) == (10, 4, 10)
    if engine == "local":
        assert sorted(reads) == sorted(files)
    after = _mtimes(out)
    assert {k: v for k, v in after.items() if k in before} == before  # a and b untouched
    blend = "a=0.7+b=0.3"
    assert sorted(set(after) - set(before)) == sorted(f"{s}/d/{p.name}" for s in ("c", blend) for p in photos)
    _cli(three, BLEND, tmp_path / "cli-blend", photos[:1])
    assert np.array_equal(
        _pixels(out / blend / "d" / photos[0].name), _pixels(tmp_path / "cli-blend" / photos[0].name)
    )
    # An input that changed is redone in every style; the others are skipped.
    (src / "d" / "p1.png").write_bytes(_png(99, 24, 16))
    changed = _bulk(**common, style=f"a,b,c,{BLEND}")
    assert (changed.ok, changed.skipped) == (4, 16)
    redone = {r["style"] for r in _rows(changed) if r["status"] == "ok"}
    assert redone == {"a", "b", "c", blend}
    assert all(Path(r["input"]).name == "p1.png" for r in _rows(changed) if r["status"] == "ok")
    settings = json.loads((out / "_manifest" / "_outputs.json").read_text())
    assert sorted(settings["styles"]) == sorted(["a", "b", "c", blend])


def test_one_selection_keeps_the_flat_layout_and_the_settings_guard_keeps_styles_apart(
    three: Path, model_file: Path, tmp_path: Path
) -> None:
    src = tmp_path / "in"
    _inputs(src, 3)
    flat = tmp_path / "flat"
    one = _bulk(model=str(three), input=str(src), output=str(flat), engine="local", style="b")
    assert (one.ok, one.failed) == (3, 1)
    assert sorted(p.name for p in (flat / "d").iterdir()) == ["p0.png", "p1.png", "p2.png"]  # OUT/KEY
    assert {r["style"] for r in _rows(one)} == {None}
    with pytest.raises(ConfigError, match=r"made differently.*style 'b' -> 'c'"):
        _bulk(model=str(three), input=str(src), output=str(flat), engine="local", style="c")
    with pytest.raises(ConfigError, match="one style at the inputs' own keys"):
        _bulk(model=str(three), input=str(src), output=str(flat), engine="local", style="a,b")
    styled = tmp_path / "styled"
    _bulk(model=str(three), input=str(src), output=str(styled), engine="local", style="a,b")
    with pytest.raises(ConfigError, match=r"a folder per style \(a, b\)"):
        _bulk(model=str(three), input=str(src), output=str(styled), engine="local", style="a")
    # The same style from another model is refused; a new style from it is not, and
    # --overwrite redoes the styles it names.
    from test_multistyle import multi_style

    from stylekit.nn.modelio import save_model

    other = tmp_path / "other.safetensors"
    entries = [{"name": n, "painting": f"/p/{n}.jpg", "digest": "1" * 16} for n in NAMES]
    save_model(
        str(other),
        multi_style(3, seed=5),
        {"format": "stylekit", "task": "style", "styles": json.dumps(entries)},
    )
    with pytest.raises(ConfigError, match="a: model_digest"):
        _bulk(model=str(other), input=str(src), output=str(styled), engine="local", style="a,c")
    added = _bulk(model=str(other), input=str(src), output=str(styled), engine="local", style="c,a+c")
    assert (added.ok, added.skipped) == (6, 0)
    forced = _bulk(
        model=str(other), input=str(src), output=str(styled), engine="local", style="a,b", overwrite=True
    )
    assert (forced.ok, forced.skipped) == (6, 0)
    # A one-style model without --style: today's layout, today's settings file.
    plain = tmp_path / "plain"
    _bulk(model=str(model_file), input=str(src), output=str(plain), engine="local")
    assert (plain / "d" / "p0.png").exists()
    assert "styles" not in json.loads((plain / "_manifest" / "_outputs.json").read_text())


def _job(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "RAY_ADDRESS": "local"}
    return subprocess.run(
        [sys.executable, str(REPO / "jobs" / "stylize.py"), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


@pytest.mark.parametrize(
    ("style", "message"),
    [
        ("a,nope", "--style nope: .* holds no style 'nope'"),
        (None, "holds 3 styles \\(a, b, c\\): choose with --style"),
        ("a:0.7+b", "give every style in the blend a weight"),
    ],
)
def test_bad_styles_are_one_line_exit_2(three: Path, tmp_path: Path, style: str | None, message: str) -> None:
    import re

    src = tmp_path / "in"
    _inputs(src, 1)
    args = [
        "--model",
        str(three),
        "--input",
        str(src),
        "--output",
        str(tmp_path / "out"),
        "--engine",
        "local",
    ]
    done = _job(*args, *(["--style", style] if style else []))
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert "Traceback" not in done.stderr and re.search(message, lines[-1]), done.stderr
    assert not list((tmp_path / "out").rglob("*.png"))


def test_an_input_inside_a_style_folder_is_refused(three: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    (out / "b").mkdir(parents=True)
    (out / "b" / "p.png").write_bytes(_png(1))
    with pytest.raises(ConfigError, match=r"--output .*/out/b is --input"):
        config_from_flags(BulkConfig, model=str(three), input=str(out / "b"), output=str(out), style="a,b")


def test_videos_with_several_styles_are_one_line(three: Path, tmp_path: Path) -> None:
    src = tmp_path / "in"
    _inputs(src, 1)
    (src / "clip.mp4").write_bytes(b"a video, by its name")  # refused before it is read
    with pytest.raises(StylekitError, match=r"writes photos only.*--style a --output"):
        _bulk(model=str(three), input=str(src), output=str(tmp_path / "out"), engine="ray", style="a,b")
    assert not list((tmp_path / "out").rglob("*.png"))
