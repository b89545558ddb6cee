"""Training's own metrics, through `ray.util.metrics`, exported by each Ray node beside Ray's
(Prometheus, with Ray's `ray_` prefix and labels: `ray_stylekit_train_step`), recorded by the
rank-0 worker at every step:

- `stylekit_train_step{name}`: the optimizer step reached;
- `stylekit_train_images_per_second{name}`: images a second over the last steps, all workers;
- `stylekit_train_loss{name, term}`: the step's loss terms (term = loss, content, style, tv), as
  the progress line and TensorBoard give them;
- `stylekit_train_images_total{name}`: images trained on (all workers), a counter.

`name` is the run's name (`--name`, by default the style's stem).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from ray.util import metrics

TERMS = ("loss", "content", "style", "tv")


@lru_cache(maxsize=1)
def _metrics() -> dict[str, Any]:
    keys = ("name",)
    return {
        "step": metrics.Gauge("stylekit_train_step", "Optimizer step reached", tag_keys=keys),
        "rate": metrics.Gauge(
            "stylekit_train_images_per_second", "Training images per second", tag_keys=keys
        ),
        "loss": metrics.Gauge("stylekit_train_loss", "Loss terms of the last step", tag_keys=(*keys, "term")),
        "images": metrics.Counter("stylekit_train_images", "Images trained on", tag_keys=keys),
    }


class TrainMetrics:
    """Rank 0's recorder: `step(...)` after every optimizer step."""

    def __init__(self, name: str, images_per_step: int):
        self.tags = {"name": name}
        self.images_per_step = images_per_step
        self.m = _metrics()

    def step(self, step: int, images_per_s: float, terms: dict[str, float]) -> None:
        self.m["step"].set(step, self.tags)
        self.m["rate"].set(images_per_s, self.tags)
        self.m["images"].inc(self.images_per_step, self.tags)
        for term in TERMS:
            if term in terms:
                self.m["loss"].set(terms[term], {**self.tags, "term": term})
