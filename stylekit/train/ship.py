"""The shipped style models' training, carried from one stint of work to the next.

The shipped weights (stylekit/models/) are the checkpoint of a training that never stops: each
stint resumes it from the committed weights (`jobs/ship_models.py --continue`), trains in rounds
in the background, measures every round on held-out photos, and installs a round's weights only
when they are better than what is installed (`better`). A model's metadata carries its whole
schedule (`schedule`: one segment per run it went through, with its steps and settings) and its
figures, so the README's table and the next stint both read them from the file itself.

Held-out photos are `../shared/data/content` (none is in the training data). The bar is the one
the issue on shipped pictures sets, on chicago at the size of the paper's own outputs
(`../shared/data/reference-outputs/`): grain at most 1.25x the original's, content at most
1.15x, style at most 1x (stylekit/nn/measures.py); and one look at every size (`SIZES`):
chicago stylized small and large carries the painting alike, and enough of it. A painting the
2016 models did not ship (no original to compare with) is held to that last bar alone.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from stylekit.errors import ConfigError
from stylekit.infer.inference import InferenceOptions, Stylizer
from stylekit.nn.measures import Figures, Yardstick, fit_longest
from stylekit.nn.modelio import load_model
from stylekit.nn.vgg import load_vgg

log = logging.getLogger(__name__)

TARGETS = Figures(grain=1.25, content=1.15, style=1.0)
# Held-out photos beside the comparison photo, each at this longer side.
HELD_OUT = ("golden_gate.jpg", "tubingen.jpg")
HELD_OUT_SIDE = 512
# A round may cost at most this much (relative) on the other held-out photos' mean content or
# grain and still be installed for what it gains on the bar.
HELD_OUT_SLACK = 0.03
# A shortfall this small is the bar met (and the least gain that counts as closer).
BAR_MET = 1e-3
# Once the bar is met, a round may carry this much less of the painting (relative held-out style
# distance) for what it gains on content and grain: the figures move by a few percent between
# rounds that look alike.
STYLE_SLACK = 0.05
# The same look at every size: the comparison photo stylized at these longer sides and viewed
# at VIEW_SIDE should carry the painting alike (Gram distances within SIZES_SPREAD of each other,
# each at most SIZES_STYLE).
SIZES = (356, 1424)
VIEW_SIDE = 384
SIZES_SPREAD = 1.5
SIZES_STYLE = 0.12
# Rounds kept in a run's rounds/ folder for `--install STEP`: the last ones.
KEEP_ROUNDS = 20
# What a segment of the schedule records, from a run's model metadata.
SEGMENT_KEYS = (
    "image_size",
    "style_size",
    "crop_scale",
    "content_weight",
    "style_weight",
    "tv_weight",
    "lr",
    "batch_size",
)


@dataclass(frozen=True)
class Shared:
    """Where the comparison data lives: the photos and the 2016 models' outputs."""

    root: Path

    @property
    def comparison_photo(self) -> Path:
        return self.root / "content" / "chicago.jpg"

    def original(self, name: str) -> Path | None:
        path = self.root / "reference-outputs" / f"chicago_{name}.jpg"
        return path if path.is_file() else None

    def held_out(self) -> list[Path]:
        return [p for p in (self.root / "content" / n for n in HELD_OUT) if p.is_file()]


@dataclass(frozen=True)
class Measured:
    """A model's figures: on the comparison photo (and the original's there, when there is
    one), the mean over the other held-out photos, and (when measured) the style of the
    comparison photo stylized at each of SIZES (`Judge.across_sizes`)."""

    chicago: Figures
    original: Figures | None
    held_out: Figures
    sizes: tuple[float, ...] = ()

    @property
    def ratios(self) -> Figures | None:
        return self.chicago.ratios(self.original) if self.original else None

    @property
    def shortfall(self) -> float | None:
        """How far the model is from the whole bar: `photo_shortfall` + `sizes_shortfall` (0:
        the bar is met). A painting with no original to compare with is held to the one bar
        that needs none, one look at every size; None when it has neither."""
        photo = self.photo_shortfall
        if photo is None and not self.sizes:
            return None
        return (photo or 0.0) + self.sizes_shortfall

    @property
    def photo_shortfall(self) -> float | None:
        """How far the comparison photo's figures are from the bar: the sum over the three
        figures of how much each exceeds its target, relative; None without an original."""
        ratios = self.ratios
        if ratios is None:
            return None
        return sum(
            max(0.0, getattr(ratios, k) / getattr(TARGETS, k) - 1) for k in ("grain", "content", "style")
        )

    @property
    def sizes_shortfall(self) -> float:
        """How far one look at every size is from its bar, relative as `shortfall`: each size's
        style above SIZES_STYLE, and their spread above SIZES_SPREAD (0 when not measured)."""
        if not self.sizes:
            return 0.0
        return max(0.0, self.sizes_spread / SIZES_SPREAD - 1) + sum(
            max(0.0, v / SIZES_STYLE - 1) for v in self.sizes
        )

    @property
    def sizes_spread(self) -> float:
        """How many times more of the painting one size carries than the other (1 when not
        measured)."""
        return max(self.sizes) / max(min(self.sizes), 1e-9) if self.sizes else 1.0

    def row(self) -> str:
        r = self.ratios
        bar = (
            f"x{r.grain:.2f} / x{r.content:.2f} / x{r.style:.2f}"
            if r
            else f"{self.chicago.grain:.1f} / {self.chicago.content:.3f} / {self.chicago.style:.3f}"
        )
        h = self.held_out
        short = "-" if self.shortfall is None else f"{self.shortfall:.3f}"
        sizes = " / ".join(f"{v:.3f}" for v in self.sizes) or "-"
        return f"{bar} | {h.grain:.1f} / {h.content:.3f} / {h.style:.3f} | {sizes} | {short}"

    def as_metadata(self) -> dict[str, str]:
        meta = {f"chicago_{k}": f"{v:.4g}" for k, v in self.chicago.as_dict().items()}
        if self.ratios:
            meta.update({f"chicago_{k}_x_original": f"{v:.3f}" for k, v in self.ratios.as_dict().items()})
        meta.update({f"held_out_{k}": f"{v:.4g}" for k, v in self.held_out.as_dict().items()})
        meta.update({f"sizes_style_{side}": f"{v:.4g}" for side, v in zip(SIZES, self.sizes, strict=False)})
        return meta


def read_rgb(path: Path, size: tuple[int, int] | None = None) -> np.ndarray:
    """(H, W, 3) uint8 RGB of an image file, resized (Lanczos) to `size` = (width, height)."""
    img = Image.open(path).convert("RGB")
    if size and img.size != size:
        img = img.resize(size, Image.Resampling.LANCZOS)
    return np.asarray(img)


class Judge:
    """Measures style models of one painting on the comparison and held-out photos, the way
    a user runs them (`python -m stylekit stylize`'s defaults on the CPU)."""

    def __init__(self, name: str, painting: Path, shared: Shared):
        self.vgg = vgg = load_vgg("caffe")
        self.painting = paint = read_rgb(painting)
        original_path = shared.original(name)
        # The comparison photo at the size of the paper's outputs (their size when there is one).
        size = Image.open(original_path).size if original_path else None
        self.comparison = shared.comparison_photo  # at its own size, for `across_sizes`
        chicago = read_rgb(self.comparison, size)
        self.photos = [chicago] + [fit_longest(read_rgb(p), HELD_OUT_SIDE) for p in shared.held_out()]
        self.sticks = [Yardstick(photo, paint, vgg) for photo in self.photos]
        self.original_pixels = read_rgb(original_path) if original_path else None
        self.original = self.sticks[0].measure(self.original_pixels) if original_path else None

    def stylize(self, model_location: str) -> list[np.ndarray]:
        """The model's pictures of the comparison photo and the held-out ones, (H, W, 3) uint8."""
        return Stylizer(load_model(model_location).model, InferenceOptions(device="cpu")).stylize(self.photos)

    def _view_stick(self) -> tuple[np.ndarray, Yardstick]:
        full = read_rgb(self.comparison)
        return full, Yardstick(fit_longest(full, VIEW_SIDE), self.painting, self.vgg)

    def original_viewed(self) -> float | None:
        """Style of the paper's own output (at its size) viewed at VIEW_SIDE, as `across_sizes`
        measures ours: what the 2016 model carries of the painting at that view."""
        if self.original_pixels is None:
            return None
        full, stick = self._view_stick()
        height, width = fit_longest(full, VIEW_SIDE).shape[:2]
        view = Image.fromarray(self.original_pixels).resize((width, height), Image.Resampling.LANCZOS)
        return stick.measure(np.asarray(view)).style

    def across_sizes(self, model_location: str) -> tuple[float, ...]:
        """Style (Gram distance to the painting) of the comparison photo stylized at each of
        SIZES (longer side) and viewed at VIEW_SIDE: one look whatever size a photo comes in."""
        full, stick = self._view_stick()
        stylizer = Stylizer(load_model(model_location).model, InferenceOptions(device="cpu"))
        return tuple(
            stick.measure(fit_longest(stylizer.stylize([fit_longest(full, side)])[0], VIEW_SIDE)).style
            for side in SIZES
        )

    def measure(self, model_location: str, pictures: list[np.ndarray] | None = None) -> Measured:
        """The model's figures (from its `pictures`, when already made), with `across_sizes`."""
        pictures = pictures if pictures is not None else self.stylize(model_location)
        figures = [stick.measure(out) for stick, out in zip(self.sticks, pictures, strict=True)]
        rest = figures[1:] or figures[:1]
        mean = Figures(
            *(float(np.mean([getattr(f, k) for f in rest])) for k in ("grain", "content", "style"))
        )
        return Measured(figures[0], self.original, mean, self.across_sizes(model_location))


def better(candidate: Measured, installed: Measured) -> tuple[bool, str]:
    """Whether to install the candidate, and why. Short of the bar (`Measured.shortfall`: for a
    painting with no original, one look at every size alone): closer to it (on the comparison
    photo first; as close there, then on one look at every size), and no more than
    HELD_OUT_SLACK worse on the other held-out photos' mean content and grain (with no
    original, nor more than STYLE_SLACK less of the painting on them). Once both meet
    the whole bar, and with no bar measured: lower held-out content and grain (within the slack
    for one of them, lower by more than it for the other) and about as much of the painting
    (held-out style at most STYLE_SLACK higher)."""
    c, i = candidate.held_out, installed.held_out
    worse = [k for k in ("content", "grain") if getattr(c, k) > getattr(i, k) * (1 + HELD_OUT_SLACK)]
    if candidate.shortfall is not None and installed.shortfall is not None:
        cand_photo, inst_photo = candidate.photo_shortfall or 0.0, installed.photo_shortfall or 0.0
        shown = (
            f"bar shortfall {cand_photo:.3f} + sizes {candidate.sizes_shortfall:.3f}, "
            f"installed {inst_photo:.3f} + {installed.sizes_shortfall:.3f}"
        )
        met = max(candidate.shortfall, installed.shortfall) <= BAR_MET
        closer = cand_photo < inst_photo - BAR_MET or (
            cand_photo <= inst_photo + BAR_MET
            and candidate.sizes_shortfall < installed.sizes_shortfall - BAR_MET
        )
        if not met and not closer:
            return False, shown
        # With no original, nothing else holds the painting at the photo's own size, and the view
        # at VIEW_SIDE can score closer to the painting while the photo at its own size loses the
        # painting's shapes (udnie's facets smoothed away: benchmarks/RESULTS.md).
        if candidate.photo_shortfall is None and c.style > i.style * (1 + STYLE_SLACK):
            worse.append("style")
        if not met and worse:
            return (
                False,
                f"held-out {worse[0]} {getattr(c, worse[0]):.3g} against {getattr(i, worse[0]):.3g} installed",
            )
        if not met:
            return True, f"closer to the bar: {shown}"
    gained = [k for k in ("content", "grain") if getattr(c, k) < getattr(i, k) * (1 - HELD_OUT_SLACK)]
    if worse or not gained or c.style > i.style * (1 + STYLE_SLACK):
        return False, (
            f"held-out grain/content/style {c.grain:.1f}/{c.content:.3f}/{c.style:.3f} against "
            f"{i.grain:.1f}/{i.content:.3f}/{i.style:.3f} installed"
        )
    return True, f"held-out {', '.join(gained)} lower, style within {STYLE_SLACK:.0%}"


def schedule_of(metadata: dict[str, str]) -> list[dict[str, object]]:
    """A model's schedule: its recorded segments, or for a model trained before schedules were
    recorded, one segment read from its flat fields."""
    if "schedule" in metadata:
        return json.loads(metadata["schedule"])
    segment = segment_of(metadata)
    if metadata.get("initialised_from"):
        segment["from"] = metadata["initialised_from"]
    return [segment]


def segment_of(metadata: dict[str, str], flags: Sequence[str] = ()) -> dict[str, object]:
    """One run's segment of a schedule: its steps and settings, from its model metadata, and
    the training flags it ran with (the next stint trains on with the same)."""
    segment: dict[str, object] = {"steps": int(metadata.get("steps", 0))}
    for key in SEGMENT_KEYS:
        if key in metadata:
            segment[key] = metadata[key]
    if metadata.get("content_warmup_steps"):
        segment["content_warmup"] = metadata["content_warmup_steps"]
    if flags:
        segment["flags"] = list(flags)
    return segment


def merge_flags(recorded: Sequence[str], given: Sequence[str]) -> list[str]:
    """The recorded training flags with those `given` put over them flag by flag: each
    `--name` given (with its values, or as `--name=value`) replaces the recorded one of that
    name; the others stay. `merge_flags(["--image-size", "128", "--tv-weight", "4"],
    ["--tv-weight", "6"])` is `["--image-size", "128", "--tv-weight", "6"]`."""

    def parse(flags: Sequence[str]) -> dict[str, list[str]]:
        parsed: dict[str, list[str]] = {}
        name = None
        for token in flags:
            if token.startswith("--"):
                name, eq, value = token.partition("=")
                parsed[name] = [value] if eq else []
            elif name is None:
                raise ConfigError(f"training flag value {token!r} has no --flag before it")
            else:
                parsed[name].append(token)
        return parsed

    merged = {**parse(recorded), **parse(given)}
    return [token for name, values in merged.items() for token in (name, *values)]


def total_steps(schedule: Sequence[dict[str, object]]) -> int:
    return sum(int(s["steps"]) for s in schedule)  # type: ignore[call-overload]


def describe_schedule(schedule: Sequence[dict[str, object]]) -> str:
    """ "1000 steps at 128 px, painting at 256 px, then 600 at 128 px (content 3, tv 4)": a
    README cell. The style image's size is named where the schedule starts and where it
    changes; the crops' zoom (--crop-scale) where a segment trained with one."""
    parts = []
    painting = None
    for i, s in enumerate(schedule):
        text = (
            f"{s['steps']} steps at {s.get('image_size', '?')} px"
            if i == 0
            else f"{s['steps']} at {s.get('image_size', '?')} px"
        )
        if s.get("style_size") and s["style_size"] != painting:
            painting = s["style_size"]
            text += f", painting at {painting} px"
        if float(s.get("crop_scale", 1)) > 1:  # type: ignore[arg-type]
            text += f", zoom up to {float(s['crop_scale']):g}x"  # type: ignore[arg-type]
        weights = [
            f"{k.split('_')[0]} {float(s[k]):g}"  # type: ignore[arg-type]
            for k in ("content_weight", "style_weight", "tv_weight")
            if k in s
        ]
        if weights:
            text += f" ({', '.join(weights)})"
        if s.get("from"):
            text += f" from {s['from']}"
        parts.append(text)
    return ", then ".join(parts)


@dataclass(frozen=True)
class Start:
    """Where a run of the shipped training started: a copy of the installed weights taken
    when the run began (installs during the run do not move it), their schedule, and for a
    style that did not ship yet, the shipped style whose weights it started from."""

    weights: Path
    schedule: list[dict[str, object]]
    origin: str | None = None

    @property
    def flags(self) -> list[str]:
        """The training flags of the schedule's last segment (none recorded: empty)."""
        return list(self.schedule[-1].get("flags", [])) if self.schedule else []  # type: ignore[call-overload]


def start_run(run: Path, installed: Path, new: bool = False) -> Start:
    """The run's start, taken from `installed` the first time (`run/start.safetensors` and
    `run/start.json`), read back after. `new`: the run trains a style that does not ship yet
    from `installed`'s weights; its schedule starts empty."""
    weights, record = run / "start.safetensors", run / "start.json"
    if not record.is_file():
        run.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(installed, weights)
        schedule = [] if new else schedule_of(load_model(str(installed)).metadata)
        origin = installed.stem if new else None
        record.write_text(json.dumps({"schedule": schedule, "origin": origin}, indent=1) + "\n")
    saved = json.loads(record.read_text())
    return Start(weights, saved["schedule"], saved.get("origin"))


def steps_done(run: Path) -> int:
    """Steps the run's last finished round reached (its model file's), 0 before the first."""
    model = run / "model.safetensors"
    return int(load_model(str(model)).metadata.get("steps", 0)) if model.is_file() else 0


def record_round(run: Path, step: int, measured: Measured, installed: bool, why: str) -> None:
    """One line of the run's curve, `run/curve.jsonl`: the step, the figures (with the style of
    the comparison photo at each of SIZES), the verdict."""
    row = {
        "step": step,
        "chicago": measured.chicago.as_dict(),
        "x_original": measured.ratios.as_dict() if measured.ratios else None,
        "held_out": measured.held_out.as_dict(),
        "sizes": dict(zip((str(side) for side in SIZES), measured.sizes, strict=False)),
        "shortfall": measured.shortfall,
        "installed": installed,
        "why": why,
    }
    with open(run / "curve.jsonl", "a") as f:
        f.write(json.dumps(row) + "\n")


def record_install(run: Path, step: int) -> None:
    """A line of the run's curve for a round installed by hand (`--install STEP`): the round's
    figures are on its own line, above."""
    with open(run / "curve.jsonl", "a") as f:
        f.write(json.dumps({"step": step, "installed": True, "why": "installed by hand"}) + "\n")


def prune_rounds(run: Path, keep: int = KEEP_ROUNDS) -> None:
    """Delete all but the last `keep` rounds kept in `run/rounds/`: a training that runs for
    weeks would otherwise keep every round (1.7 MB each)."""
    for step in kept_rounds(run)[:-keep]:
        (run / "rounds" / f"{step}.safetensors").unlink()


def kept_rounds(run: Path) -> list[int]:
    """The step counts of the rounds kept in `run/rounds/` (STEP.safetensors), ascending."""
    folder = run / "rounds"
    return sorted(int(p.stem) for p in folder.glob("*.safetensors") if p.stem.isdigit())
