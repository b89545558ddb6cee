"""What a command paints with, from its model and `--style` (options.StyleChoice): one network
per selection, a one-style model for each style or blend of a multi-style model
(nn/styles.one_style), each with the label its outputs are named by.

Several selections write one output each: what one selection would write at PATH goes to
`per_style(PATH, label)`, a folder named after the style beside it (`out/photo.jpg` ->
`out/wave/photo.jpg`; a blend's folder is `a=0.7+b=0.3`).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

import torch

from stylekit.errors import StylekitError
from stylekit.infer.options import Blend, StyleChoice, blend_label
from stylekit.nn import zoo
from stylekit.nn.modelio import LoadedModel
from stylekit.nn.styles import one_style

CHOOSE_HINT = "choose with --style NAME, NAME,NAME (one output each) or NAME:0.5+NAME:0.5 (a blend)"


@dataclass(frozen=True)
class Chosen:
    """One network to run: `label` names its outputs ("" with no --style), `weights` the blend
    of the model's styles it paints, (N,) in slot order (() for super-resolution)."""

    label: str
    model: torch.nn.Module
    weights: tuple[float, ...] = ()


def choose(loaded: LoadedModel, choice: StyleChoice, model_name: str) -> list[Chosen]:
    """The networks `choice` asks of the model loaded from `model_name`, in its order; one-line
    errors that say what to do for a style it does not hold or a multi-style model with none."""
    blends = choice.blends
    if not loaded.styles:
        if blends:
            raise StylekitError(f"--style applies to style models; {model_name} is a super-resolution model")
        return [Chosen("", loaded.model)]
    if not blends:
        if len(loaded.styles) > 1:
            raise StylekitError(
                f"{model_name} holds {len(loaded.styles)} styles ({', '.join(loaded.styles)}): {CHOOSE_HINT}"
            )
        return [Chosen("", loaded.model, (1.0,))]
    chosen = []
    for blend in blends:
        weights = weights_for(blend, loaded.styles, model_name)
        model = loaded.model if weights == (1.0,) else one_style(loaded.model, weights)  # type: ignore[arg-type]
        chosen.append(Chosen(blend_label(blend), model, weights))
    return chosen


def weights_for(blend: Blend, styles: tuple[str, ...], model_name: str) -> tuple[float, ...]:
    """The blend as (N,) weights over the model's styles, in slot order."""
    for name, _ in blend:
        if name in styles:
            continue
        if len(styles) == 1:
            shipped = f" (the shipped one: --model {name})" if name in zoo.names() else ""
            raise StylekitError(
                f"--style {name}: {model_name} is a one-style model of {styles[0]}; leave --style out, "
                f"or give --model a model that holds {name}{shipped}"
            )
        close = difflib.get_close_matches(name, styles, n=1)
        hint = f"did you mean {close[0]}? " if close else ""
        raise StylekitError(
            f"--style {name}: {model_name} holds no style {name!r}; {hint}its styles: {', '.join(styles)}"
        )
    given = dict(blend)
    return tuple(given.get(style, 0.0) for style in styles)


def per_style(path: str, label: str) -> str:
    """Where a selection's output goes when there are several: in a folder named `label`
    beside `path` (a local path or URI)."""
    head, slash, tail = path.rstrip("/").rpartition("/")
    return f"{head}{slash}{label}/{tail}"
