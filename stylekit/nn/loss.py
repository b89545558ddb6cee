"""Perceptual losses (Johnson et al. 2016, section 3.2), measured through the frozen VGG-16.

For output y_hat = f_W(x), content target y_c = x and style target y_s:

    L = w_c * l_feat(y_hat, y_c)   at relu2_2
      + w_s * sum_j l_style(y_hat, y_s)   at relu1_2, relu2_2, relu3_3, relu4_3
      + w_tv * l_tv(y_hat)

l_feat is the mean squared feature difference; l_style the mean squared difference of Gram
matrices G_j = phi_j phi_j^T / (C_j H_j W_j); l_tv the total-variation regulariser of Mahendran
& Vedaldi that the paper uses for spatial smoothness.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from stylekit.nn.vgg import VGGFeatures

CONTENT_TAP = 1  # index of relu2_2 among the VGG taps (relu1_2, relu2_2, relu3_3, relu4_3)


def gram_matrix(features: torch.Tensor) -> torch.Tensor:
    """(B,C,H,W) -> (B,C,C), normalised by C*H*W so layers of any size weigh alike."""
    b, c, h, w = features.shape
    flat = features.reshape(b, c, h * w)
    # Grams are sums over H*W products: accumulate in fp32 even under autocast.
    flat = flat.float()
    return torch.bmm(flat, flat.transpose(1, 2)) / (c * h * w)


def content_loss(out_features: torch.Tensor, content_features: torch.Tensor) -> torch.Tensor:
    """Feature reconstruction loss: MSE between (B,C,H,W) feature maps."""
    return F.mse_loss(out_features.float(), content_features.float())


def style_loss(out_grams: list[torch.Tensor], style_grams: list[torch.Tensor]) -> torch.Tensor:
    """Sum over layers of MSE between (B,C,C) output Grams and the (1,C,C) style Grams."""
    total = out_grams[0].new_zeros(())
    for g_out, g_style in zip(out_grams, style_grams, strict=True):
        total = total + F.mse_loss(g_out, g_style.expand_as(g_out))
    return total


def tv_loss(y: torch.Tensor) -> torch.Tensor:
    """Total variation of (B,3,H,W) pixels: mean squared difference of vertical and horizontal
    neighbours. Penalises the high-frequency noise a perceptual loss alone tolerates."""
    y = y.float()
    dh = y[..., 1:, :] - y[..., :-1, :]
    dw = y[..., :, 1:] - y[..., :, :-1]
    return dh.pow(2).mean() + dw.pow(2).mean()


@dataclass(frozen=True)
class LossTerms:
    """The weighted terms of one step's loss (scalars) and their sum; `painting`: the style
    target they were measured against (a multi-style run trains one painting a step)."""

    content: torch.Tensor
    style: torch.Tensor
    tv: torch.Tensor
    painting: int = 0

    @property
    def total(self) -> torch.Tensor:
        return self.content + self.style + self.tv

    def as_floats(self) -> dict[str, float]:
        return {
            "loss": float(self.total.detach()),
            "content": float(self.content.detach()),
            "style": float(self.style.detach()),
            "tv": float(self.tv.detach()),
        }


class PerceptualLoss(nn.Module):
    """Weighted content + style + TV loss against one style image, or one of several
    (`painting`: a multi-style network trains one a step).

    The style Grams are computed once, at construction, for every painting; per step only the
    output needs a VGG pass with gradients, and the content features are taken without
    building a graph and only as far as relu2_2 (a third of VGG's work up to relu4_3).
    """

    def __init__(
        self,
        vgg: VGGFeatures,
        style_image: torch.Tensor | Sequence[torch.Tensor],
        content_weight: float,
        style_weight: float,
        tv_weight: float,
    ):
        super().__init__()
        self.vgg = vgg
        self.content_weight = content_weight
        self.style_weight = style_weight
        self.tv_weight = tv_weight
        paintings = [style_image] if isinstance(style_image, torch.Tensor) else list(style_image)
        self.paintings = len(paintings)
        with torch.no_grad():  # each painting's Grams, (1,C,C) per tap; paintings may differ in size
            grams = [[gram_matrix(f) for f in vgg(p)] for p in paintings]
        for i in range(len(grams[0])):
            self.register_buffer(f"style_gram{i}", torch.cat([g[i] for g in grams]), persistent=False)

    @property
    def style_grams(self) -> list[torch.Tensor]:
        """Per VGG tap, the (P,C,C) Grams of the P paintings."""
        return [getattr(self, f"style_gram{i}") for i in range(4)]

    def forward(self, output: torch.Tensor, content: torch.Tensor, painting: int = 0) -> LossTerms:
        """output y_hat and content x, both (B,3,H,W) in [0,255]; the style target is painting
        number `painting`."""
        with torch.no_grad():  # only up to relu2_2: the content target needs no more
            content_features = self.vgg(content, n_taps=CONTENT_TAP + 1)[CONTENT_TAP]
        if self.style_weight == 0:  # a content-only step (warm-up) needs VGG only to relu2_2
            out_content = self.vgg(output, n_taps=CONTENT_TAP + 1)[CONTENT_TAP]
            style = output.new_zeros((), dtype=torch.float32)
        else:
            out_features = self.vgg(output)
            out_content = out_features[CONTENT_TAP]
            out_grams = [gram_matrix(f) for f in out_features]
            targets = [g[painting : painting + 1] for g in self.style_grams]  # each (1,C,C)
            style = self.style_weight * style_loss(out_grams, targets)
        return LossTerms(
            content=self.content_weight * content_loss(out_content, content_features),
            style=style,
            tv=self.tv_weight * tv_loss(output),
            painting=painting,
        )
