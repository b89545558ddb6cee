"""The morning report (stylekit/bulk/report/): its content from a manifest made here (no Ray), the
`python -m stylekit report` command on a local folder and over S3, the bulk job's one-warning
failure mode, and the page in a real headless Chromium (screenshot, images loaded)."""

from __future__ import annotations

import base64
import datetime as dt
import io
import logging
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

from conftest import make_bucket, upload_dir
from stylekit.bulk.plan.layout import RunLayout
from stylekit.bulk.plan.manifest import ManifestWriter, manifest_table
from stylekit.bulk.report import build, runs, thumbs
from stylekit.files.storage import StorageOptions

REPO = Path(__file__).resolve().parents[1]
T0 = dt.datetime(2026, 12, 1, 1, 30, tzinfo=dt.timezone.utc)


def _photo(path: Path, seed: int, size: tuple[int, int] = (96, 64), noise: bool = False) -> int:
    """A small smooth photo, or (`noise`) one whose thumbnails do not compress."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    if noise:
        Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path, quality=95)
        return path.stat().st_size
    base = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
    Image.fromarray(base).resize(size, Image.Resampling.BILINEAR).save(path, quality=90)
    return path.stat().st_size


def make_run(
    root: Path,
    run_id: str,
    ok: list[str],
    failed: dict[str, str],
    skipped: list[str],
    start: dt.datetime,
    uri: str | None = None,
) -> None:
    """A bulk run's files under root/in and root/out and its manifest under OUT/_manifest/
    (OUT = root/out, or `uri`/out when given: the manifest rows then name `uri`/in and
    `uri`/out, where the caller uploads the files), rows finishing one a second from `start`,
    in two parts."""
    src, out = root / "in", root / "out"
    src.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    layout = RunLayout(f"{uri}/in", f"{uri}/out", run_id) if uri else RunLayout(str(src), str(out), run_id)
    rows: list[dict[str, object]] = []
    for i, key in enumerate(ok):
        size = _photo(src / key, i)
        rows.append(
            dict(key=key, status="ok", error="", input_bytes=size, output_bytes=_photo(out / key, 100 + i))
        )
    for key, error in failed.items():
        (src / key).write_bytes(b"junk")
        rows.append(dict(key=key, status="failed", error=error, input_bytes=4, output_bytes=0))
    for key in skipped:
        rows.append(dict(key=key, status="skipped", error="", input_bytes=10, output_bytes=10))
    with ManifestWriter(layout.manifest_dir, StorageOptions()) as writer:
        for half in (rows[: len(rows) // 2], rows[len(rows) // 2 :]):
            if not half:
                continue
            columns = {f: [r.get(f, 0) for r in half] for f in ("width", "height", "seconds")}
            columns.update(
                {f: [r[f] for r in half] for f in ("status", "error", "input_bytes", "output_bytes")}
            )
            columns["key"] = columns["output_key"] = [r["key"] for r in half]
            table = manifest_table(columns, layout, "digest0123456789")
            offset = rows.index(half[0])
            stamps = [start + dt.timedelta(seconds=offset + i) for i in range(len(half))]
            table = table.set_column(
                table.schema.get_field_index("finished_at"),
                "finished_at",
                pa.array(stamps, pa.timestamp("ms", tz="UTC")),
            )
            writer.add(table)
            writer.flush()


@pytest.fixture
def two_nights(tmp_path: Path) -> Path:
    make_run(
        tmp_path,
        "20261130T013000Z-aaaaaa",
        [f"a{i}.jpg" for i in range(5)],
        {},
        [],
        T0 - dt.timedelta(days=1),
    )
    failures = {f"bad{i}.jpg": f"cannot decode image: <_io.BytesIO object at 0x7f{i:04x}>" for i in range(25)}
    failures["big.png"] = "refused: 912345678 pixels is above --max-pixels"
    ok = [f"b{i}.jpg" for i in range(6)] + ["sub/c.jpg"]
    make_run(tmp_path, "20261201T013000Z-bbbbbb", ok, failures, [f"a{i}.jpg" for i in range(5)], T0)
    return tmp_path / "out"


def test_report_content(two_nights: Path) -> None:
    location = build.build_report(str(two_nights))
    assert location == str(two_nights / "_manifest" / "run=20261201T013000Z-bbbbbb" / "_report.html")
    text = Path(location).read_text()
    # counts against the night before, with the change
    history = re.search(r"<table><tr><th class=\"l\">run</th>.*?</table>", text, re.S)[0]
    assert history.index("20261201T013000Z-bbbbbb") < history.index("20261130T013000Z-aaaaaa")
    assert (
        '<td class="ok">7 <span class="muted">(+2)</span></td><td class="failed">26 <span class="up">(+26)</span>'
        in history
    )
    assert '<td class="skipped">5 <span class="muted">(+5)</span></td><td>38</td>' in history
    # failures grouped by error: the 25 decode errors (addresses differ) are one group
    assert (
        '<td class="failed">25</td><td class="l">cannot decode image: &lt;_io.BytesIO object at 0x7f0000&gt;'
        in text
    )
    assert "and 5 more (status = 'failed' in the manifest)" in text  # 20 keys listed
    assert text.count("/bad") == 20 and "big.png" in text
    assert text.index("cannot decode image") < text.index("refused: 912345678")  # largest first
    # throughput: one bar per second of the run (38 rows, one a second)
    svg = re.search(r"<svg.*?</svg>", text, re.S)[0]
    assert svg.count("<rect") == 1 + 33 and "images/s" in svg
    # the sample: every ok photo of the night (7 < 12), input beside output, as data: URIs
    images = re.findall(r'<img src="([^"]*)" alt="(input|output) ([^"]*)"', text)
    assert len(images) == 14 and all(src.startswith("data:image/jpeg;base64,") for src, _, _ in images)
    assert {key for _, _, key in images} == {f"b{i}.jpg" for i in range(6)} | {"sub/c.jpg"}
    first = Image.open(io.BytesIO(base64.b64decode(images[0][0].split(",", 1)[1])))
    assert max(first.size) <= thumbs.THUMB_SIDE and first.size[0] > first.size[1]  # 96x64 kept its shape
    # self-contained: nothing fetched from anywhere
    assert not re.search(r'(src|href)="(?!data:)', text) and "http" not in text.replace(
        "http://www.w3.org/2000/svg", ""
    )


def test_older_run_and_bounded_size(
    two_nights: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    older = Path(build.build_report(str(two_nights), "20261130T013000Z-aaaaaa"))
    text = older.read_text()
    assert "20261201T013000Z-bbbbbb" not in text  # only that night and the ones before it
    assert "No input failed." in text
    # A night of many large photos: the page stays within the thumbnail budget.
    root = tmp_path / "big"
    make_run(root, "20261202T013000Z-cccccc", [f"p{i:03d}.jpg" for i in range(40)], {}, [], T0)
    for i in range(40):
        _photo(root / "in" / f"p{i:03d}.jpg", i, (1600, 1200), noise=True)
        _photo(root / "out" / f"p{i:03d}.jpg", i + 50, (1600, 1200), noise=True)
    monkeypatch.setattr(thumbs, "BUDGET_BYTES", 200_000)
    page = Path(build.build_report(str(root / "out"), samples=40)).read_bytes()
    assert len(page) < 200_000 + 30_000
    assert page.count(b'<figure class="pair">') < 40  # budget reached before all 40


def test_unreadable_sample_shows_why(two_nights: Path, tmp_path: Path) -> None:
    (tmp_path / "out" / "b0.jpg").unlink()
    text = Path(build.build_report(str(two_nights))).read_text()
    assert "could not read: " in text and text.count("<img ") == 12


def test_grouping_masks_what_varies() -> None:
    assert runs.error_group("x at 0x7f12ab: 123456 bytes") == runs.error_group("x at 0x7f99cd: 654321 bytes")
    assert runs.error_group("timeout after 120 s") != runs.error_group("permission denied")


def test_report_command_and_its_errors(two_nights: Path) -> None:
    from stylekit.__main__ import main

    assert main(["report", str(two_nights), "--run", "20261130T013000Z-aaaaaa"]) == 0
    assert (two_nights / "_manifest" / "run=20261130T013000Z-aaaaaa" / "_report.html").is_file()
    for args, message in (
        ([str(two_nights), "--run", "nope"], "error: no run 'nope' under"),
        ([str(two_nights.parent / "in")], "error: no bulk runs under"),
        ([str(two_nights), "--samples", "500"], "error: --samples must be 0-100"),
    ):
        result = subprocess.run(
            [sys.executable, "-m", "stylekit", "report", *args], capture_output=True, text=True, timeout=120
        )
        assert result.returncode == 2 and result.stderr.startswith(message), result.stderr
        assert len(result.stderr.strip().splitlines()) == 1


def test_the_manifest_stays_a_parquet_dataset(two_nights: Path) -> None:
    import pyarrow.parquet as pq

    build.build_report(str(two_nights))
    assert pq.read_table(two_nights / "_manifest").num_rows == 5 + 38


def test_a_report_failure_is_one_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="stylekit.bulk.report.build")
    assert (
        build.write_report_quietly(str(tmp_path / "nothing"), "20261201T000000Z-000000", StorageOptions())
        is None
    )
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "report not written" in warnings[0].getMessage()


@pytest.mark.s3
def test_report_over_s3(tmp_path: Path, s3_server: str) -> None:
    """A run whose manifest and files live only in S3: the report reads them from there."""
    import boto3

    make_bucket("reports")
    ok, failed = ["x.jpg", "deep/y.jpg"], {"z.jpg": "cannot decode image: broken"}
    make_run(tmp_path / "n1", "20261130T013000Z-aaaaaa", ["x.jpg"], {}, [], T0, uri="s3://reports/night")
    make_run(tmp_path / "n2", "20261201T013000Z-bbbbbb", ok, failed, [], T0, uri="s3://reports/night")
    for night in ("n1", "n2"):
        for side in ("in", "out"):
            upload_dir(tmp_path / night / side, "reports", f"night/{side}")
    shutil.rmtree(tmp_path / "n1")
    shutil.rmtree(tmp_path / "n2")
    from stylekit.__main__ import main

    assert main(["report", "s3://reports/night/out"]) == 0
    key = "night/out/_manifest/run=20261201T013000Z-bbbbbb/_report.html"
    text = boto3.client("s3").get_object(Bucket="reports", Key=key)["Body"].read().decode()
    assert text.count('src="data:image/jpeg;base64,') == 4 and "could not read" not in text
    assert "<code>deep/y.jpg</code>" in text and "s3://reports/night/z.jpg" not in text
    assert "s3://reports/night/in/z.jpg" in text and "20261130T013000Z-aaaaaa" in text


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def test_report_in_headless_chromium(two_nights: Path, tmp_path: Path) -> None:
    browser = _chromium()
    if browser is None:
        pytest.skip("no chromium binary (Debian: apt-get install chromium)")
    page = Path(build.build_report(str(two_nights)))
    base = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run"]
    base += [f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000"]
    dom = subprocess.run([*base, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120)
    marker = re.search(r'<body data-images="([^"]*)"', dom.stdout)
    assert marker and marker[1] == "loaded 14/14", dom.stdout[:500] + dom.stderr[-500:]
    shot = tmp_path / "report.png"
    subprocess.run(
        [*base, "--window-size=1200,1700", f"--screenshot={shot}", page.as_uri()],
        capture_output=True,
        timeout=120,
        check=True,
    )
    pixels = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    assert pixels.shape[:2] == (1700, 1200)
    # The bars of the plot (#3b6fb6) and the thumbnails (not white or grey) show.
    assert (np.abs(pixels - [0x3B, 0x6F, 0xB6]).sum(axis=2) < 30).sum() > 500
    colourful = (pixels.max(axis=2) - pixels.min(axis=2)) > 40
    assert colourful[900:].sum() > 20_000, "no thumbnails painted in the lower half"


def test_a_night_with_nothing_new(tmp_path: Path) -> None:
    make_run(tmp_path, "20261203T013000Z-dddddd", [], {}, ["a.jpg", "b.jpg"], T0)
    text = Path(build.build_report(str(tmp_path / "out"))).read_text()
    assert "Nothing was stylized in this run." in text and "No photo was stylized in this run." in text
    assert "No input failed." in text and '<td class="skipped">2</td>' in text and "<img" not in text
