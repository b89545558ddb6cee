"""Train the models that ship in the package and install them: `python jobs/ship_models.py`.

Each style is trained with `jobs/train.py` (its own run, its own local Ray or the cluster this
is submitted to) at the schedule given by the flags; an interrupted run resumes when this is run
again. Finished models are copied into `stylekit/models/` under the style's name and
`stylekit/models/index.json` is rewritten with their sha256 (`stylekit.nn.zoo`).

Super-resolution models (`--sr-models sr_x4_pixel,sr_x4`) are trained the same way with
`--task sr` (factor and loss from the name) into OUTPUT/NAME; when installed, their Set5 and
Set14 PSNR/SSIM (the literature's protocol, stylekit/infer/srmetrics.py) are measured on the
shipped float16 weights and recorded in their metadata.
"""

import argparse
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # this checkout's stylekit first

import torch  # noqa: E402

from stylekit.nn import zoo  # noqa: E402
from stylekit.nn.modelio import load_model, save_model  # noqa: E402

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
TRAIN_MINI = "train-mini: 148 photos (colour BSD68 + Sun-Hays 80), a small stand-in for the paper's MS-COCO"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--styles", default="starry_night,wave,the_scream,composition_vii")
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "train-mini"))
    parser.add_argument("--data-description", default=TRAIN_MINI)
    parser.add_argument("--output", default=str(REPO / "runs" / "zoo"))
    parser.add_argument("--install-only", action="store_true", help="only copy finished models in")
    parser.add_argument("--sr-models", default="", help=f"super-resolution models: {', '.join(SR_MODELS)}")
    args, train_flags = parser.parse_known_args()
    names = [s for s in args.styles.split(",") if s]
    unknown = [s for s in names if s not in STYLES]
    if unknown:
        parser.error(f"unknown style(s) {', '.join(unknown)}; choose from {', '.join(STYLES)}")
    sr_names = [s for s in args.sr_models.split(",") if s]
    unknown = [s for s in sr_names if s not in SR_MODELS]
    if unknown:
        parser.error(f"unknown SR model(s) {', '.join(unknown)}; choose from {', '.join(SR_MODELS)}")
    for name in names:
        model = Path(args.output) / name / "model.safetensors"
        if not args.install_only:
            style = REPO / "stylekit" / "examples" / "styles" / f"{name}.jpg"
            cmd = [
                sys.executable, str(REPO / "jobs" / "train.py"), "--style", str(style), "--data", args.data,
                "--data-description", args.data_description, "--output", args.output, "--name", name,
                *train_flags,
            ]  # fmt: skip
            print("+", " ".join(cmd), flush=True)
            subprocess.run(cmd, check=True)
        if model.is_file():
            # Shipped as float16 (half the bytes; loaded as float32): the checkout must stay
            # small enough to travel to a GPU machine (tools/gpu_run/README.md).
            loaded = load_model(str(model))
            meta = {**loaded.metadata, "stored_dtype": "float16"}
            # Paths on the training machine mean nothing to a user: name the bundled style.
            meta["style"] = f"stylekit/examples/styles/{name}.jpg"
            meta.pop("weights_sha256", None)
            save_model(str(zoo.models_dir() / f"{name}.safetensors"), loaded.model, meta, dtype=torch.float16)
    for name in sr_names:
        ship_sr(name, Path(args.output), args, train_flags)
    entries = zoo.write_index(zoo.models_dir(), {**STYLES, **SR_MODELS})
    for name, entry in entries.items():
        print(f"{name}: {entry['bytes']} bytes, sha256 {entry['sha256'][:16]}...")
    print(models_table(entries))
    return 0


def ship_sr(name: str, output: Path, args: argparse.Namespace, train_flags: list[str]) -> None:
    """Train (unless --install-only) and install one super-resolution model, float16, with its
    Set5/Set14 figures in the metadata."""
    factor, loss = name.split("_")[1].removeprefix("x"), "pixel" if name.endswith("_pixel") else "feature"
    model = output / name / "model.safetensors"
    if not args.install_only:
        cmd = [
            sys.executable, str(REPO / "jobs" / "train.py"), "--task", "sr", "--factor", factor,
            "--sr-loss", loss, "--data", args.data, "--data-description", args.data_description,
            "--output", str(output), "--name", name, *train_flags,
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


def models_table(entries: dict) -> str:
    """The README's tables of shipped models, from their own metadata."""
    sr = {n: e for n, e in entries.items() if e.get("task") == "sr"}
    entries = {n: e for n, e in entries.items() if n not in sr}
    rows = [
        "| name | painting | training | final loss (content + style + tv) | sha256 |",
        "|---|---|---|---|---|",
    ]
    for name, entry in sorted(entries.items()):
        meta = load_model(name).metadata
        schedule = f"{meta.get('steps')} steps x {meta.get('batch_size')} at {meta.get('image_size')} px"
        if meta.get("content_warmup_steps"):
            schedule += f" (first {meta['content_warmup_steps']} content only)"
        if meta.get("initialised_from"):
            schedule += f", from {meta['initialised_from']}"
        losses = " + ".join(f"{float(meta.get('final_' + k, 'nan')):.3g}" for k in ("content", "style", "tv"))
        rows.append(
            f"| `{name}` | {entry.get('description', '')} | {schedule} | {losses} | `{entry['sha256'][:12]}` |"
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
    sys.exit(main())
