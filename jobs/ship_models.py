"""Train the models that ship in the package and install them: `python jobs/ship_models.py`.

Each style is trained with `jobs/train.py` (its own run, its own local Ray or the cluster this
is submitted to) at the schedule given by the flags; an interrupted run resumes when this is run
again. Finished models are copied into `stylekit/models/` under the style's name and
`stylekit/models/index.json` is rewritten with their sha256 (`stylekit.files.zoo`).
"""

import argparse
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # this checkout's stylekit first

import torch  # noqa: E402

from stylekit.files import zoo  # noqa: E402
from stylekit.files.modelio import load_model, save_model  # noqa: E402

STYLES = {
    "starry_night": "Vincent van Gogh, The Starry Night (1889)",
    "wave": "Katsushika Hokusai, The Great Wave off Kanagawa (c. 1831)",
    "the_scream": "Edvard Munch, The Scream (1893)",
    "composition_vii": "Wassily Kandinsky, Composition VII (1913)",
    "udnie": "Francis Picabia, Udnie (1913)",
    "shipwreck": "J. M. W. Turner, The Shipwreck (1805)",
}
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
    args, train_flags = parser.parse_known_args()
    names = [s for s in args.styles.split(",") if s]
    unknown = [s for s in names if s not in STYLES]
    if unknown:
        parser.error(f"unknown style(s) {', '.join(unknown)}; choose from {', '.join(STYLES)}")
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
            # small enough to travel to a GPU machine (benchmarks/README.md).
            loaded = load_model(str(model))
            meta = {**loaded.metadata, "stored_dtype": "float16"}
            # Paths on the training machine mean nothing to a user: name the bundled style.
            meta["style"] = f"stylekit/examples/styles/{name}.jpg"
            meta.pop("weights_sha256", None)
            save_model(str(zoo.models_dir() / f"{name}.safetensors"), loaded.model, meta, dtype=torch.float16)
    entries = zoo.write_index(zoo.models_dir(), {n: STYLES[n] for n in STYLES})
    for name, entry in entries.items():
        print(f"{name}: {entry['bytes']} bytes, sha256 {entry['sha256'][:16]}...")
    print(models_table(entries))
    return 0


def models_table(entries: dict) -> str:
    """The README's table of shipped models, from their own metadata."""
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
    return "\n".join(rows)


if __name__ == "__main__":
    sys.exit(main())
