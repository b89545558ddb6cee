"""stylekit's own metrics reach Ray's Prometheus endpoint: a small bulk run and a few training
steps on a local Ray, then the node's exported metrics (HTTP GET /metrics on its
metrics_export_port) read back and checked against what the runs did."""

from __future__ import annotations

import re
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import ray
from PIL import Image

from conftest import free_port

pytestmark = pytest.mark.ray

REPO = Path(__file__).resolve().parents[1]
SAMPLE = re.compile(r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>[^}]*)\})? (?P<value>\S+)$")


@pytest.fixture(scope="module")
def metrics_url() -> Iterator[str]:
    if ray.is_initialized():
        ray.shutdown()
    port = free_port()
    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        logging_level="WARNING",
        _metrics_export_port=port,
        _system_config={"metrics_report_interval_ms": 1000},  # actors' last values exported before they end
    )
    node = next(n for n in ray.nodes() if n["Alive"])
    assert node["MetricsExportPort"] == port
    yield f"http://127.0.0.1:{port}/metrics"
    ray.shutdown()


def scrape(url: str) -> list[tuple[str, dict[str, str], float]]:
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    samples = []
    for line in text.splitlines():
        m = SAMPLE.match(line)
        if m and m["name"].startswith("ray_stylekit_"):  # Ray prefixes application metrics
            labels = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m["labels"] or ""))
            samples.append((m["name"].removeprefix("ray_"), labels, float(m["value"])))
    return samples


def wait_for(url: str, wanted: set[str], seconds: float = 60) -> list[tuple[str, dict[str, str], float]]:
    """Scrape until every metric in `wanted` shows (Ray exports on an interval)."""
    deadline = time.monotonic() + seconds
    while True:
        samples = scrape(url)
        missing = wanted - {name for name, _, _ in samples}
        if not missing:
            return samples
        assert time.monotonic() < deadline, (
            f"not exported: {sorted(missing)}; got {sorted({s[0] for s in samples})}"
        )
        time.sleep(1)


def value(samples: list[tuple[str, dict[str, str], float]], metric: str, /, **labels: str) -> float:
    """The sum over workers of `metric`'s samples with these labels."""
    found = [v for n, lab, v in samples if n == metric and all(lab.get(k) == x for k, x in labels.items())]
    assert found, f"{metric} {labels} not in {[(n, lab) for n, lab, _ in samples if n == metric]}"
    return sum(found)


def test_bulk_run_exports_its_counts_bytes_rate_and_busy_share(
    metrics_url: str, tmp_path: Path, model_file: Path
) -> None:
    from stylekit.bulk.config import BulkConfig
    from stylekit.bulk.night import run_night
    from stylekit.cli import config_from_flags

    src = tmp_path / "in"
    src.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(src / f"p{i}.png")
    (src / "broken.jpg").write_bytes(b"not a jpeg")
    out = tmp_path / "out"
    first = run_night(
        config_from_flags(BulkConfig, model=str(model_file), input=str(src), output=str(out), batch_size=2)
    )
    assert (first.ok, first.failed) == (3, 1)
    (src / "p3.png").write_bytes((src / "p0.png").read_bytes())  # one new input: a second night
    second = run_night(
        config_from_flags(BulkConfig, model=str(model_file), input=str(src), output=str(out), batch_size=2)
    )
    assert (second.ok, second.failed, second.skipped) == (1, 1, 3)
    for summary in (first, second):  # each run wrote its morning report beside its manifest
        report = out / "_manifest" / f"run={summary.run_id}" / "_report.html"
        assert report.read_text().count('src="data:image/jpeg;base64,') == 2 * summary.ok

    wanted = {
        "stylekit_bulk_inputs_total",
        "stylekit_bulk_bytes_read_total",
        "stylekit_bulk_bytes_written_total",
        "stylekit_bulk_images_per_second",
        "stylekit_bulk_inputs_todo",
        "stylekit_bulk_stylize_busy_seconds_total",
        "stylekit_bulk_stylize_alive_seconds_total",
        "stylekit_bulk_stylize_busy_share",
    }
    output = str(out)
    deadline = time.monotonic() + 60
    while True:  # counters settle once both runs' last records are exported
        samples = wait_for(metrics_url, wanted)
        counts = {
            s: value(samples, "stylekit_bulk_inputs_total", output=output, status=s) for s in ("ok", "failed")
        }
        if counts == {"ok": 4, "failed": 2} or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert counts == {"ok": 4, "failed": 2}
    assert value(samples, "stylekit_bulk_inputs_total", output=output, status="skipped") == 3
    manifest_bytes = sum(p.stat().st_size for p in out.glob("p*.png"))
    assert value(samples, "stylekit_bulk_bytes_written_total", output=output) == manifest_bytes
    read = sum(p.stat().st_size for p in src.iterdir()) + (src / "broken.jpg").stat().st_size
    assert value(samples, "stylekit_bulk_bytes_read_total", output=output) == read  # broken.jpg read twice
    assert value(samples, "stylekit_bulk_inputs_todo", output=output) == 0
    assert value(samples, "stylekit_bulk_images_per_second", output=output) > 0
    busy = value(samples, "stylekit_bulk_stylize_busy_seconds_total", output=output)
    alive = value(samples, "stylekit_bulk_stylize_alive_seconds_total", output=output)
    assert 0 < busy <= alive
    shares = [
        v for n, lab, v in samples if n == "stylekit_bulk_stylize_busy_share" and lab.get("output") == output
    ]
    assert shares and all(0 < s <= 1 for s in shares)


def test_training_exports_step_rate_and_losses(
    metrics_url: str, tmp_path: Path, tiny_train_dir: Path
) -> None:
    from stylekit.train.config import TrainConfig
    from stylekit.train.ray_job import run_training

    config = TrainConfig(
        style=str(REPO / "stylekit" / "examples" / "styles" / "wave.jpg"), data=str(tiny_train_dir),
        output=str(tmp_path / "runs"), name="metrics-test", vgg_weights="random", image_size=32,
        style_size=64, num_workers=1, max_steps=4, checkpoint_every=4, log_every=2, batch_size=2,
    )  # fmt: skip
    run_training(config)
    samples = wait_for(
        metrics_url,
        {
            "stylekit_train_step",
            "stylekit_train_images_per_second",
            "stylekit_train_loss",
            "stylekit_train_images_total",
        },
    )
    assert value(samples, "stylekit_train_step", name="metrics-test") == 4
    assert value(samples, "stylekit_train_images_total", name="metrics-test") == 8
    assert value(samples, "stylekit_train_images_per_second", name="metrics-test") > 0
    terms = {
        lab["term"]: v
        for n, lab, v in samples
        if n == "stylekit_train_loss" and lab.get("name") == "metrics-test"
    }
    assert set(terms) == {"loss", "content", "style", "tv"}
    assert terms["loss"] == pytest.approx(terms["content"] + terms["style"] + terms["tv"], rel=1e-4)
