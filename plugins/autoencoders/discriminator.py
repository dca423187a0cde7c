"""The PatchGAN discriminator of the LDM / taming-transformers first stage (pix2pix's
``NLayerDiscriminator``).

``n_layers + 2`` 4x4 convolutions: ``conv(C -> ch, stride 2)``, LeakyReLU(0.2); then
``n_layers - 1`` blocks ``conv(stride 2), norm, LeakyReLU`` doubling the width (capped
at 8 ch); one ``conv(stride 1), norm, LeakyReLU``; a final ``conv(stride 1) -> 1``
logit per patch. On 32x32 inputs with ``n_layers = 2`` the output is a 6x6 map of
logits, each judging an overlapping patch of the image (receptive field 34 px
for ``n_layers = 2``, 70 px for 3). Weights are initialised N(0, 0.02), norm scales
N(1, 0.02), as in the reference.

``norm = "group"`` (default) uses GroupNorm, so a logit does not depend on the other
images of the batch and the separate real / fake passes behave identically in
training and evaluation; ``"batch"`` is the reference's BatchNorm.
"""

from __future__ import annotations

from typing import Literal

from torch import Tensor, nn

__all__ = ["PatchDiscriminator"]


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    return nn.GroupNorm(min(32, channels // 4) or 1, channels)


class PatchDiscriminator(nn.Module):
    """PatchGAN: images ``(B, C, H, W)`` -> patch logits ``(B, 1, h, w)``."""

    def __init__(self, in_channels: int = 3, channels: int = 32, n_layers: int = 2,
                 norm: Literal["group", "batch"] = "group"):
        super().__init__()
        if n_layers < 1:
            raise ValueError(f"n_layers must be >= 1, got {n_layers}")
        if norm not in ("group", "batch"):
            raise ValueError(f"norm must be 'group' or 'batch', got {norm!r}")
        layers: list[nn.Module] = [nn.Conv2d(in_channels, channels, 4, 2, 1),
                                   nn.LeakyReLU(0.2)]
        width = channels
        for i in range(1, n_layers + 1):
            out = channels * min(2 ** i, 8)
            stride = 2 if i < n_layers else 1
            layers += [nn.Conv2d(width, out, 4, stride, 1, bias=False), _norm(norm, out),
                       nn.LeakyReLU(0.2)]
            width = out
        layers.append(nn.Conv2d(width, 1, 4, 1, 1))
        self.net = nn.Sequential(*layers)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, 0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.normal_(m.weight, 1.0, 0.02)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)
