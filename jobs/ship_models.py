"""Train the models that ship in the package and install them: `python jobs/ship_models.py`.

Each style is trained with `jobs/train.py` (its own run, its own local Ray or the cluster this
is submitted to) into OUTPUT/NAME; flags not listed here go to `jobs/train.py` as they are
(`--max-steps 40000 --image-size 256`, the schedule). An interrupted run resumes when this is run
again. Finished models are copied into `stylekit/models/` under the style's name, float16, and
`stylekit/models/index.json` is rewritten with their sha256.

`--continue` resumes the shipped styles' training from the weights committed in the package (a
training that spans many stints of work, carried by the committed weights): rounds of `--round-steps` steps
per style, each round measured on held-out photos against the installed model and installed only
when better; the model's metadata then holds its whole schedule and its figures. Each round
trains with the flags the installed model's schedule recorded (DEFAULT_RECIPE when none), with
the flags given here put over them one by one (`--style-weight 7` changes that weight alone). A style that
is not installed yet starts from the installed starry_night and is first installed after
`--first-install-steps`. Run it in the background at low priority while other work goes on:

    RAY_ADDRESS=local nohup nice -n 19 python jobs/ship_models.py --continue > runs/ship.log 2>&1 &

The last rounds are kept as they would ship (OUTPUT/NAME/rounds/STEP.safetensors, figures in
their metadata); `--install STEP --styles NAME` installs one of them by hand, whatever the verdict
said (a round the held-out guard refused that looks better, say).

`--measure` prints the installed models' figures (and those of OUTPUT's runs) without training.

Super-resolution models (`--sr-models sr_x4_pixel,sr_x4`) are trained the same way with
`--task sr` (factor and loss from the name); when installed, their Set5 and Set14 PSNR/SSIM
(the literature's protocol) are measured on the shipped float16 weights and recorded in their
metadata.
"""

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # this checkout's stylekit first

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from stylekit.cli import OneLineErrorParser, add_config_arguments, config_from_args, run_main  # noqa: E402
from stylekit.errors import ConfigError  # noqa: E402
from stylekit.nn import zoo  # noqa: E402
from stylekit.nn.modelio import load_model, save_model  # noqa: E402
from stylekit.options_meta import flag  # noqa: E402
from stylekit.train import ship  # noqa: E402

STYLES = {
    "starry_night": "Vincent van Gogh, The Starry Night (1889)",
    "wave": "Katsushika Hokusai, The Great Wave off Kanagawa (c. 1831)",
    "the_scream": "Edvard Munch, The Scream (1893)",
    "composition_vii": "Wassily Kandinsky, Composition VII (1913)",
    "udnie": "Francis Picabia, Udnie (1913)",
    "shipwreck": "J. M. W. Turner, The Shipwreck (1805)",
}
SR_MODELS = {
    "sr_x4": "x4 super-resolution, feature reconstruction loss at VGG-16 relu2_2 + TV (the paper's)",
    "sr_x4_pixel": "x4 super-resolution, per-pixel MSE loss (the paper's baseline)",
    "sr_x8": "x8 super-resolution, feature reconstruction loss at VGG-16 relu2_2 + TV (the paper's)",
    "sr_x8_pixel": "x8 super-resolution, per-pixel MSE loss (the paper's baseline)",
}
SR_TEST_SETS = REPO.parent / "shared" / "data" / "sr"
SHARED = REPO.parent / "shared" / "data"
# The recipe --continue trains with when the installed model records none: the content and TV
# weights rebalanced for short CPU schedules (RESULTS: shipped pictures), the paper's other settings.
DEFAULT_RECIPE = ["--image-size", "128", "--style-size", "256", "--content-weight", "3", "--tv-weight", "4"]
# A style that ships for the first time starts from this one's weights.
FIRST_FROM = "starry_night"
TRAIN_MINI = "train-mini: 148 photos (colour BSD68 + Sun-Hays 80), a small stand-in for the paper's MS-COCO"


def _names(text: str) -> tuple[str, ...]:
    return tuple(s for s in text.split(",") if s)


@dataclass(frozen=True)
class ShipConfig:
    """What to train and install; flags it does not name go to `jobs/train.py` untouched."""

    styles: str = field(
        default=",".join(STYLES),
        metadata=flag(
            f"styles to train and install, comma-separated ('' for none): any of {', '.join(STYLES)}"
        ),
    )
    data: str = field(
        default=str(REPO.parent / "shared" / "data" / "train-mini"),
        metadata=flag(
            "training images (jobs/train.py's --data)",
            default_text="shared/data/train-mini beside the checkout",
        ),
    )
    data_description: str = field(
        default=TRAIN_MINI, metadata=flag("what the training data is, recorded in each model's metadata")
    )
    output: str = field(
        default=str(REPO / "runs" / "zoo"),
        metadata=flag(
            "where the training runs go: OUTPUT/NAME each", default_text="runs/zoo in the checkout"
        ),
    )
    install_only: bool = field(
        default=False, metadata=flag("train nothing: only install the finished models found in OUTPUT")
    )
    sr_models: str = field(
        default="",
        metadata=flag(
            f"super-resolution models to train and install, comma-separated: any of {', '.join(SR_MODELS)}"
        ),
    )

    continue_training: bool = field(
        default=False,
        metadata=flag(
            "resume the shipped styles' training from the installed weights, in rounds; install a round only when it measures better on the held-out photos",
            aliases=["--continue"],
        ),
    )
    rounds: int = field(default=1000, metadata=flag("--continue: rounds of training per style"))
    round_steps: int = field(default=200, metadata=flag("--continue: training steps per round"))
    first_install_steps: int = field(
        default=800,
        metadata=flag("--continue: steps before a style that does not ship yet is first installed"),
    )
    install: int | None = field(
        default=None,
        metadata=flag(
            "install the round of --continue that reached STEP steps (kept in OUTPUT/NAME/rounds/), "
            "whatever the verdict said; one style (--styles NAME)",
            metavar="STEP",
        ),
    )
    measure: bool = field(
        default=False,
        metadata=flag("print the installed models' figures on the held-out photos, train nothing"),
    )
    shared: str = field(
        default=str(SHARED),
        metadata=flag(
            "--continue, --measure: the held-out photos (content/) and the 2016 models' outputs (reference-outputs/)",
            default_text="shared/data beside the checkout",
        ),
    )
    save: str = field(
        default="",
        metadata=flag(
            "--measure: a folder for each style's comparison photo: the photo, ours, the 2016 original"
        ),
    )
    models_dir: str = field(
        default=str(zoo.models_dir()),
        metadata=flag(
            "--continue, --measure: where the installed models are", default_text="the package's models"
        ),
    )

    def __post_init__(self) -> None:
        for name in ("rounds", "round_steps", "first_install_steps"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be >= 1 (got {getattr(self, name)})")
        unknown = [s for s in _names(self.styles) if s not in STYLES]
        if unknown:
            raise ConfigError(f"unknown style(s) {', '.join(unknown)}; choose from {', '.join(STYLES)}")
        if self.install is not None and self.install < 1:
            raise ConfigError(f"--install must be a round's step count, >= 1 (got {self.install})")
        if self.install is not None and (self.continue_training or self.measure):
            raise ConfigError(
                "--install STEP installs a kept round and trains nothing: run it without --continue or --measure"
            )
        if self.install is not None and len(_names(self.styles)) != 1:
            raise ConfigError("--install STEP installs one style's round: give --styles NAME")
        unknown = [s for s in _names(self.sr_models) if s not in SR_MODELS]
        if unknown:
            raise ConfigError(f"unknown SR model(s) {', '.join(unknown)}; choose from {', '.join(SR_MODELS)}")


def main() -> int:
    parser = OneLineErrorParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arguments(parser, ShipConfig)
    args, train_flags = parser.parse_known_args()
    config = config_from_args(ShipConfig, args)
    if config.install is not None:
        return install_round(config)
    if config.continue_training or config.measure:
        if not (Path(config.shared) / "content").is_dir():
            raise ConfigError(
                f"--shared {config.shared} has no content/ folder of held-out photos; give the shared data folder"
            )
        if config.continue_training:
            return continue_training(config, train_flags)
        return measure(config)
    for name in _names(config.styles):
        model = Path(config.output) / name / "model.safetensors"
        if not config.install_only:
            style = REPO / "stylekit" / "examples" / "styles" / f"{name}.jpg"
            cmd = [
                sys.executable, str(REPO / "jobs" / "train.py"), "--style", str(style), "--data", config.data,
                "--data-description", config.data_description, "--output", config.output, "--name", name,
                *train_flags,
            ]  # fmt: skip
            print("+", " ".join(cmd), flush=True)
            subprocess.run(cmd, check=True)
        if model.is_file():
            # Shipped as float16, loaded as float32: half the bytes in every checkout, wheel and
            # image that carries the package.
            loaded = load_model(str(model))
            meta = {**loaded.metadata, "stored_dtype": "float16"}
            # Paths on the training machine mean nothing to a user: name the bundled style.
            meta["style"] = f"stylekit/examples/styles/{name}.jpg"
            meta.pop("weights_sha256", None)
            save_model(str(zoo.models_dir() / f"{name}.safetensors"), loaded.model, meta, dtype=torch.float16)
    for name in _names(config.sr_models):
        ship_sr(name, config, train_flags)
    entries = zoo.write_index(zoo.models_dir(), {**STYLES, **SR_MODELS})
    for name, entry in entries.items():
        print(f"{name}: {entry['bytes']} bytes, sha256 {entry['sha256'][:16]}...")
    print(models_table(entries))
    return 0


def continue_training(config: ShipConfig, train_flags: list[str]) -> int:
    """Rounds of training for each style from where the installed model (or this work tree's
    run of it) stands, each measured and installed only when better; a style that does not
    ship yet starts from FIRST_FROM's weights and is installed once it has trained
    --first-install-steps."""
    output = continue_output(config)
    models = Path(config.models_dir)
    judges: dict[str, ship.Judge] = {}
    # The installed model's figures, measured again only when its file changes (an install by
    # this run or by hand): not once more every round.
    installed_figures: dict[tuple[str, int], ship.Measured] = {}
    for round_no in range(1, config.rounds + 1):
        for name in _names(config.styles):
            run, installed = output / name, models / f"{name}.safetensors"
            new = not installed.is_file()
            start = ship.start_run(run, models / f"{FIRST_FROM}.safetensors" if new else installed, new=new)
            flags = ship.merge_flags(start.flags or DEFAULT_RECIPE, train_flags)
            target = ship.steps_done(run) + config.round_steps
            style = REPO / "stylekit" / "examples" / "styles" / f"{name}.jpg"
            cmd = [
                sys.executable, str(REPO / "jobs" / "train.py"), "--style", str(style), "--data", config.data,
                "--data-description", config.data_description, "--output", str(output), "--name", name,
                "--init-from", str(start.weights), "--max-steps", str(target), "--checkpoint-every", "100",
                *flags,
            ]  # fmt: skip
            print(f"round {round_no}, {name}: + {' '.join(cmd)}", flush=True)
            subprocess.run(cmd, check=True)
            judge = judges.get(name) or judges.setdefault(
                name, ship.Judge(name, style, ship.Shared(Path(config.shared)))
            )
            with tempfile.TemporaryDirectory() as tmp:
                candidate = Path(tmp) / f"{name}.safetensors"
                loaded = load_model(str(run / "model.safetensors"))
                segment = ship.segment_of(loaded.metadata, flags=flags)
                if start.origin:
                    segment["from"] = start.origin
                meta = shipped_metadata(name, loaded.metadata, [*start.schedule, segment])
                save_model(str(candidate), loaded.model, meta, dtype=torch.float16)
                ours = judge.measure(str(candidate))
                if new:
                    install = target >= config.first_install_steps
                    why = f"first install at {config.first_install_steps} steps"
                else:
                    key = (name, installed.stat().st_mtime_ns)
                    if key not in installed_figures:
                        installed_figures[key] = judge.measure(str(installed))
                    install, why = ship.better(ours, installed_figures[key])
                ship.record_round(run, target, ours, install, why)
                verdict = "installed" if install else "kept the installed" if not new else "not installed yet"
                print(f"{name} at {target} steps: {ours.row()} ({verdict}: {why})", flush=True)
                # The round is kept as it would ship, figures and all: `--install STEP` installs
                # one the verdict refused.
                meta = {**meta, **ours.as_metadata()}
                meta.pop("weights_sha256", None)
                kept = run / "rounds" / f"{target}.safetensors"
                kept.parent.mkdir(exist_ok=True)
                save_model(str(kept), loaded.model, meta, dtype=torch.float16)
                ship.prune_rounds(run)
            if install:
                shutil.copyfile(kept, installed)
                zoo.write_index(models, {**STYLES, **SR_MODELS})
                # What was just measured is now the installed model: not measured again.
                installed_figures[(name, installed.stat().st_mtime_ns)] = ours
    return 0


def continue_output(config: ShipConfig) -> Path:
    """Where --continue's runs go: OUTPUT, or runs/ship when OUTPUT is left at runs/zoo (a
    from-scratch training's folder, whose checkpoints would otherwise be resumed)."""
    return Path(config.output) if config.output != str(REPO / "runs" / "zoo") else REPO / "runs" / "ship"


def install_round(config: ShipConfig) -> int:
    """--install STEP: install the style's kept round of STEP steps (OUTPUT/NAME/rounds/, as
    --continue measured and saved it) over the installed model, whatever the verdict said."""
    (name,) = _names(config.styles)
    run = continue_output(config) / name
    chosen = run / "rounds" / f"{config.install}.safetensors"
    if not chosen.is_file():
        kept = ship.kept_rounds(run)
        where = (
            f"its kept rounds: {', '.join(str(k) for k in kept)}"
            if kept
            else "none is kept there: run --continue first (--output as given to it)"
        )
        raise ConfigError(
            f"--install {config.install}: no round of {name} reached {config.install} steps in {run / 'rounds'}; {where}"
        )
    meta = load_model(str(chosen)).metadata
    models = Path(config.models_dir)
    models.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(chosen, models / f"{name}.safetensors")
    entries = zoo.write_index(models, {**STYLES, **SR_MODELS})
    ship.record_install(run, config.install)
    figures = chicago_ratios(meta)
    sizes = " / ".join(meta[f"sizes_style_{side}"] for side in ship.SIZES if f"sizes_style_{side}" in meta)
    print(
        f"{name}: installed the round at {config.install} steps by hand ({meta.get('steps')} steps in all; "
        f"chicago {figures}; style at {' / '.join(str(s) for s in ship.SIZES)} px {sizes or '-'}), "
        f"sha256 {entries[name]['sha256'][:16]}...",
        flush=True,
    )
    return 0


def shipped_metadata(name: str, meta: dict[str, str], schedule: list[dict[str, object]]) -> dict[str, str]:
    """A trained style model's metadata as shipped: float16, the bundled painting's name (a path
    on the training machine means nothing to a user), the whole schedule and its total steps."""
    meta = {**meta, "stored_dtype": "float16", "style": f"stylekit/examples/styles/{name}.jpg"}
    meta["schedule"] = json.dumps(schedule)
    meta["steps"] = str(ship.total_steps(schedule))
    for stale in ("weights_sha256", "initialised_from", "content_warmup_steps"):
        meta.pop(stale, None)
    return meta


def measure(config: ShipConfig) -> int:
    """The installed models' figures (and any finished run of them under --output), and how
    alike they paint the comparison photo at a small and a large size; with --save, each
    style's picture of the comparison photo beside the photo and the original."""
    print(
        "| model | chicago grain / content / style (x the original) | held-out grain / content / style "
        f"| style at {' / '.join(str(side) for side in ship.SIZES)} px | bar shortfall |"
    )
    print("|---|---|---|---|---|")
    sizes: list[tuple[str, ship.Measured, float | None]] = []
    shared = ship.Shared(Path(config.shared))
    for name in _names(config.styles):
        style = REPO / "stylekit" / "examples" / "styles" / f"{name}.jpg"
        judge = ship.Judge(name, style, shared)
        installed = str(Path(config.models_dir) / f"{name}.safetensors")
        pictures = judge.stylize(installed)
        figures = judge.measure(installed, pictures)
        print(f"| {name} (installed) | {figures.row()} |", flush=True)
        if config.save:
            panels = [judge.photos[0], pictures[0]]
            if judge.original_pixels is not None:
                panels.append(judge.original_pixels)
            Path(config.save).mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.concatenate(panels, axis=1)).save(Path(config.save) / f"chicago_{name}.png")
        run = Path(config.output) / name / "model.safetensors"
        if run.is_file():
            print(f"| {name} ({run}) | {judge.measure(str(run)).row()} |", flush=True)
        sizes.append((name, figures, judge.original_viewed()))
    sides = " / ".join(f"{side} px" for side in ship.SIZES)
    print(
        f"\nOne look at every size: style of the comparison photo stylized at {sides} (longer side), "
        f"viewed at {ship.VIEW_SIDE} px; the bar: each at most {ship.SIZES_STYLE}, within "
        f"{ship.SIZES_SPREAD}x of each other"
    )
    print(f"| model | {sides} | spread | bar | the 2016 original, viewed so |\n|---|---|---|---|---|")
    for name, figures, original in sizes:
        met = figures.sizes_shortfall == 0
        shown = " / ".join(f"{v:.3f}" for v in figures.sizes)
        theirs = "-" if original is None else f"{original:.3f}"
        print(
            f"| {name} | {shown} | {figures.sizes_spread:.2f}x | {'met' if met else 'not met'} | {theirs} |",
            flush=True,
        )
    return 0


def ship_sr(name: str, config: ShipConfig, train_flags: list[str]) -> None:
    """Train (unless --install-only) and install one super-resolution model, float16, with its
    Set5/Set14 figures in the metadata."""
    factor, loss = name.split("_")[1].removeprefix("x"), "pixel" if name.endswith("_pixel") else "feature"
    model = Path(config.output) / name / "model.safetensors"
    if not config.install_only:
        cmd = [
            sys.executable, str(REPO / "jobs" / "train.py"), "--task", "sr", "--factor", factor,
            "--sr-loss", loss, "--data", config.data, "--data-description", config.data_description,
            "--output", config.output, "--name", name, *train_flags,
        ]  # fmt: skip
        print("+", " ".join(cmd), flush=True)
        subprocess.run(cmd, check=True)
    if not model.is_file():
        return
    from stylekit.infer.inference import InferenceOptions, Stylizer
    from stylekit.infer.srmetrics import evaluate_folder, mean_score

    target = zoo.models_dir() / f"{name}.safetensors"
    meta = {**load_model(str(model)).metadata, "stored_dtype": "float16"}
    meta.pop("weights_sha256", None)
    save_model(str(target), load_model(str(model)).model, meta, dtype=torch.float16)
    shipped = load_model(str(target)).model  # the float16 weights, as users get them
    stylizer = Stylizer(shipped, InferenceOptions(device="cpu", precision="fp32"))
    for dataset in ("Set5", "Set14"):
        folder = SR_TEST_SETS / dataset
        if folder.is_dir():
            score = mean_score(
                evaluate_folder(lambda low: stylizer.stylize([low])[0], str(folder), int(factor))
            )
            meta[f"{dataset.lower()}_psnr_y"] = f"{score.psnr:.2f}"
            meta[f"{dataset.lower()}_ssim_y"] = f"{score.ssim:.4f}"
            print(f"{name}: {dataset} x{factor} {score.psnr:.2f} dB, SSIM {score.ssim:.4f}", flush=True)
    save_model(str(target), shipped, meta, dtype=torch.float16)


def chicago_ratios(meta: dict[str, str]) -> str:
    """A shipped model's figures on chicago as multiples of the 2016 original's, from its
    metadata: "x1.18 / x1.10 / x0.64" (grain / content / style), "-" when it has none."""
    if "chicago_grain_x_original" not in meta:
        return "-"
    return " / ".join(f"x{float(meta[f'chicago_{k}_x_original']):.2f}" for k in ("grain", "content", "style"))


def models_table(entries: dict) -> str:
    """The README's tables of shipped models, from their own metadata."""
    sr = {n: e for n, e in entries.items() if e.get("task") == "sr"}
    entries = {n: e for n, e in entries.items() if n not in sr}
    rows = [
        "| name | painting | training (batch 4) | on chicago: grain / content / style, x the 2016 model's | sha256 |",
        "|---|---|---|---|---|",
    ]
    for name, entry in sorted(entries.items()):
        meta = load_model(name).metadata
        schedule = ship.describe_schedule(ship.schedule_of(meta))
        figures = chicago_ratios(meta)
        rows.append(
            f"| `{name}` | {entry.get('description', '')} | {schedule} | {figures} | `{entry['sha256'][:12]}` |"
        )
    if sr:
        rows += [
            "",
            "| name | model | training | Set5 PSNR / SSIM (Y) | Set14 PSNR / SSIM (Y) | sha256 |",
            "|---|---|---|---|---|---|",
        ]
        for name, entry in sorted(sr.items()):
            meta = load_model(name).metadata
            schedule = f"{meta.get('steps')} steps x {meta.get('batch_size')} at {meta.get('image_size')} px"
            if meta.get("initialised_from"):
                schedule += f", from {meta['initialised_from']}"
            figures = [
                f"{meta.get(f'{d}_psnr_y', '?')} / {meta.get(f'{d}_ssim_y', '?')}" for d in ("set5", "set14")
            ]
            rows.append(
                f"| `{name}` | {entry.get('description', '')} | {schedule} | {figures[0]} | {figures[1]} | `{entry['sha256'][:12]}` |"
            )
    return "\n".join(rows)


if __name__ == "__main__":
    run_main(main)
