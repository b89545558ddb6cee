"""The super-resolution losses (Johnson et al. 2016, section 4.1): the output y_hat = f_W(x_lr)
against the high-resolution image y, with no style term.

- "feature": w_c * l_feat(y_hat, y) at VGG-16 relu2_2 (the paper's point: sharper, lower PSNR)
  + w_tv * l_tv(y_hat);
- "pixel": w_c * mean squared pixel difference (its baseline, as SRCNN trains) + w_tv * l_tv.

Both return `LossTerms` with the reconstruction term as `content` and `style` zero, so the
training loop, its logs and TensorBoard treat SR and style runs alike.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from stylekit.nn.loss import CONTENT_TAP, LossTerms, content_loss, tv_loss
from stylekit.nn.vgg import VGGFeatures

SR_LOSSES = ("feature", "pixel")


class SRLoss(nn.Module):
    """Feature (relu2_2) or per-pixel reconstruction loss plus TV; `vgg` only for "feature"."""

    def __init__(self, kind: str, vgg: VGGFeatures | None, content_weight: float, tv_weight: float):
        super().__init__()
        if kind not in SR_LOSSES:
            raise ValueError(f"SR loss must be one of {SR_LOSSES} (got {kind!r})")
        if kind == "feature" and vgg is None:
            raise ValueError("the feature loss needs a loss network")
        self.kind = kind
        self.vgg = vgg if kind == "feature" else None
        self.content_weight = content_weight
        self.tv_weight = tv_weight
        self.style_weight = 0.0  # the training loop sets it per step; SR has no style term

    def forward(self, output: torch.Tensor, target: torch.Tensor) -> LossTerms:
        """output y_hat and target y, both (B,3,H,W) in [0,255]."""
        if self.vgg is not None:
            with torch.no_grad():
                target_features = self.vgg(target, n_taps=CONTENT_TAP + 1)[CONTENT_TAP]
            out_features = self.vgg(output, n_taps=CONTENT_TAP + 1)[CONTENT_TAP]
            reconstruction = content_loss(out_features, target_features)
        else:
            reconstruction = F.mse_loss(output.float(), target.float())
        return LossTerms(
            content=self.content_weight * reconstruction,
            style=output.new_zeros((), dtype=torch.float32),
            tv=self.tv_weight * tv_loss(output),
        )
