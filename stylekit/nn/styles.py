"""The styles of a TransformerNet (nn/model.py): every convolution is shared, and each style is a
slot of gamma and beta in each of the 15 conditional instance norms.

Inference runs a one-style network: `one_style` materialises a slot, or a blend of slots (their
gamma and beta interpolated), into a plain N = 1 network, which the fast path, tiling and
export take as they take any one-style model. Adding paintings to a trained network
(`frozen_start`, then `join`) trains a small network of the new slots only, on the base
network's frozen convolutions, and joins it after the base's own slots: those are copied, not
retrained, so they give the same pixels as before, bit for bit.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from stylekit.nn.model import ConditionalInstanceNorm2d, TransformerNet


def norms(net: TransformerNet) -> list[tuple[str, ConditionalInstanceNorm2d]]:
    """The network's 15 instance norms with their names (`in1`, `res1.in1`, ...), in order."""
    return [(name, m) for name, m in net.named_modules() if isinstance(m, ConditionalInstanceNorm2d)]


def is_norm_key(net: TransformerNet, key: str) -> bool:
    """Whether a state-dict key is a style's parameter (a norm's weight or bias)."""
    return key.rpartition(".")[0] in {name for name, _ in norms(net)}


def one_style(net: TransformerNet, weights: Sequence[float]) -> TransformerNet:
    """A one-style copy of `net` painting the blend `weights` of its N styles, (N,), e.g. [0, 1, 0]
    for its second style (that slot's own gamma and beta, exactly) or [0.7, 0.3] for a blend.
    Every convolution is copied unchanged; the copy is in eval mode on `net`'s device."""
    if len(weights) != net.styles:
        raise ValueError(f"{len(weights)} style weights for a network of {net.styles} styles")
    only = [i for i, w in enumerate(weights) if w != 0]
    style: int | torch.Tensor = (
        only[0] if len(only) == 1 and weights[only[0]] == 1 else torch.tensor([float(w) for w in weights])
    )
    state = {k: v for k, v in net.state_dict().items() if not is_norm_key(net, k)}
    with torch.no_grad():
        for name, norm in norms(net):
            gamma, beta = norm.gamma_beta(
                style.to(norm.weight.device) if isinstance(style, torch.Tensor) else style
            )
            state[f"{name}.weight"], state[f"{name}.bias"] = gamma, beta
    return _like(net, 1, state)


def grow(net: TransformerNet, added: int) -> TransformerNet:
    """`net` with `added` new slots after its own, each starting as the mean of its styles (a
    painting between them); its own slots and every convolution copied unchanged."""
    return join(net, frozen_start(net, added))


def frozen_start(net: TransformerNet, styles: int) -> TransformerNet:
    """The network that trains `styles` new paintings for `net`: its convolutions, frozen
    (no gradients are computed for them), and `styles` slots, each starting as the mean of
    `net`'s styles. Train it, then `join(net, it)`."""
    start = one_style(net, [1.0 / net.styles] * net.styles)
    state = {}
    for key, value in start.state_dict().items():
        state[key] = value.unsqueeze(0).repeat(styles, 1) if is_norm_key(start, key) else value
    out = _like(net, styles, state)
    freeze_convolutions(out)
    return out


def freeze_convolutions(net: TransformerNet) -> None:
    """Train only the styles' gamma and beta: every other parameter stops asking for gradients."""
    for key, p in net.named_parameters():
        p.requires_grad_(is_norm_key(net, key))


def join(base: TransformerNet, added: TransformerNet) -> TransformerNet:
    """`base`'s styles followed by `added`'s, for an `added` network trained on `base`'s
    convolutions (`frozen_start`): every tensor of `base` is copied bit for bit."""
    ours, theirs = base.state_dict(), added.state_dict()
    for key, value in ours.items():
        if not is_norm_key(base, key) and not torch.equal(value, theirs[key].to(value.device)):
            raise ValueError(f"the added styles were trained on other convolutions ({key} differs)")
    state = dict(ours)
    for name, _ in norms(base):
        for part in ("weight", "bias"):
            key = f"{name}.{part}"
            rows = [
                ours[key].reshape(base.styles, -1),
                theirs[key].to(ours[key].device).reshape(added.styles, -1),
            ]
            state[key] = torch.cat(rows)
    return _like(base, base.styles + added.styles, state)


def _like(source: TransformerNet, styles: int, state: dict[str, torch.Tensor]) -> TransformerNet:
    """A network of `styles` slots holding `state` (every tensor), on `source`'s device, in eval
    mode, with its paint side. Built without initialising weights: no random draws are taken
    from the caller's generator."""
    with torch.device("meta"):
        net = TransformerNet(styles)
    net = net.to_empty(device=next(source.parameters()).device)
    net.load_state_dict(state)
    net.paint_side = source.paint_side
    return net.eval()
