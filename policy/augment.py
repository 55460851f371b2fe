"""Batched SimCLR-style augmentation on CPU tensors: random resized crop + colour jitter, no flips.

torchvision's transforms work one image at a time; at a few hundred images
per training step that loop costs as much as the network on 2 cores. These
do the same operations for the whole batch at once: the crop through one
``roi_align`` call, the colour jitter as per-image affine maps (hue is a
rotation about the grey axis, which equals torchvision's HSV hue shift to
within a few grey levels).
"""

from __future__ import annotations

import math

import torch
from torchvision.ops import roi_align

_GRAY = torch.tensor([0.299, 0.587, 0.114])


def random_resized_crop(x: torch.Tensor, scale: tuple[float, float], gen: torch.Generator,
                        ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> torch.Tensor:
    """x: [B, 3, H, W] float. Each image: a crop of area fraction in ``scale`` resized back to H x W."""
    b, _, h, w = x.shape
    area = torch.empty(b).uniform_(scale[0], scale[1], generator=gen) * (h * w)
    log_r = torch.empty(b).uniform_(math.log(ratio[0]), math.log(ratio[1]), generator=gen)
    r = torch.exp(log_r)
    cw = torch.sqrt(area * r).clamp(max=w)
    ch = torch.sqrt(area / r).clamp(max=h)
    x0 = torch.rand(b, generator=gen) * (w - cw)
    y0 = torch.rand(b, generator=gen) * (h - ch)
    boxes = torch.stack([torch.arange(b, dtype=torch.float32), x0, y0, x0 + cw, y0 + ch], dim=1)
    return roi_align(x, boxes.to(x.dtype), output_size=(h, w), spatial_scale=1.0, sampling_ratio=2, aligned=True)


def _hue_matrices(angles: torch.Tensor) -> torch.Tensor:
    """[B] radians -> [B, 3, 3] rotations of RGB about the grey axis (1, 1, 1)/sqrt(3)."""
    c, s = torch.cos(angles), torch.sin(angles)
    k = 1.0 / 3.0
    sq = math.sqrt(k)
    m = torch.empty(len(angles), 3, 3)
    m[:, 0, 0] = c + (1 - c) * k
    m[:, 0, 1] = k * (1 - c) - sq * s
    m[:, 0, 2] = k * (1 - c) + sq * s
    m[:, 1, 0] = k * (1 - c) + sq * s
    m[:, 1, 1] = c + k * (1 - c)
    m[:, 1, 2] = k * (1 - c) - sq * s
    m[:, 2, 0] = k * (1 - c) - sq * s
    m[:, 2, 1] = k * (1 - c) + sq * s
    m[:, 2, 2] = c + k * (1 - c)
    return m


def color_jitter(x: torch.Tensor, brightness: float, contrast: float, saturation: float, hue: float,
                 gen: torch.Generator) -> torch.Tensor:
    """x: [B, 3, H, W] in [0, 1]. Factors drawn per image as in torchvision's ColorJitter."""
    b = x.shape[0]

    def factor(amount: float) -> torch.Tensor:
        return torch.empty(b, 1, 1, 1).uniform_(max(0.0, 1 - amount), 1 + amount, generator=gen)

    gray_w = _GRAY.to(x.dtype).view(1, 3, 1, 1)
    x = (x * factor(brightness)).clamp(0, 1)
    mean = (x * gray_w).sum(1, keepdim=True).mean(dim=(2, 3), keepdim=True)
    x = ((x - mean) * factor(contrast) + mean).clamp(0, 1)
    gray = (x * gray_w).sum(1, keepdim=True)
    x = ((x - gray) * factor(saturation) + gray).clamp(0, 1)
    if hue > 0:
        angles = torch.empty(b).uniform_(-hue, hue, generator=gen) * 2 * math.pi
        x = torch.einsum("bij,bjhw->bihw", _hue_matrices(angles).to(x.dtype), x).clamp(0, 1)
    return x


def shadows(x: torch.Tensor, probability: float, gen: torch.Generator) -> torch.Tensor:
    """Darken a soft-edged half of each chosen image (a straight shadow edge at a random angle and place) by
    a random 20-60%: the arm's and the lamp's shadows that lighting changes bring."""
    b, _, h, w = x.shape
    chosen = torch.rand(b, generator=gen) < probability
    if not chosen.any():
        return x
    angle = torch.rand(b, generator=gen) * 2 * math.pi
    offset = (torch.rand(b, generator=gen) - 0.5) * 0.8
    depth = 0.2 + 0.4 * torch.rand(b, generator=gen)
    ys = torch.linspace(-0.5, 0.5, h).view(1, h, 1)
    xs = torch.linspace(-0.5, 0.5, w).view(1, 1, w)
    side = xs * torch.cos(angle).view(b, 1, 1) + ys * torch.sin(angle).view(b, 1, 1) - offset.view(b, 1, 1)
    mask = torch.sigmoid(side * 40)  # a soft edge a few pixels wide
    factor = 1 - (depth * chosen).view(b, 1, 1) * mask
    return x * factor.unsqueeze(1)


def pasted_patches(x: torch.Tensor, probability: float, gen: torch.Generator) -> torch.Tensor:
    """Paste a rectangle cut from another image of the batch (10-30% of the side, anywhere, tinted a random
    colour) into each chosen image: clutter the encoder learns to look past."""
    b, _, h, w = x.shape
    out = x.clone()
    for i in torch.nonzero(torch.rand(b, generator=gen) < probability).flatten().tolist():
        ph = int(h * (0.1 + 0.2 * float(torch.rand(1, generator=gen))))
        pw = int(w * (0.1 + 0.2 * float(torch.rand(1, generator=gen))))
        src = (i + 1 + int(torch.randint(max(1, b - 1), (1,), generator=gen))) % b
        sy, sx = (int(torch.randint(h - ph + 1, (1,), generator=gen)), int(torch.randint(w - pw + 1, (1,),
                                                                                            generator=gen)))
        dy, dx = (int(torch.randint(h - ph + 1, (1,), generator=gen)), int(torch.randint(w - pw + 1, (1,),
                                                                                            generator=gen)))
        tint = 0.3 + 1.2 * torch.rand(3, 1, 1, generator=gen)  # a colour of its own, not the table's
        out[i, :, dy:dy + ph, dx:dx + pw] = (x[src, :, sy:sy + ph, sx:sx + pw] * tint).clamp(0, 1)
    return out


def augment(images_uint8: torch.Tensor, jitter: tuple[float, float, float, float], crop_scale: tuple[float, float],
            gen: torch.Generator, shadow: float = 0.0, paste: float = 0.0) -> torch.Tensor:
    """uint8 [B, H, W, 3] -> augmented float [B, 3, H, W] in [0, 1] (normalisation is the encoder's job).
    ``shadow``, ``paste``: the share of images given a shadow / a pasted patch."""
    x = images_uint8.permute(0, 3, 1, 2).float().div_(255.0)
    x = random_resized_crop(x, crop_scale, gen)
    if paste > 0:
        x = pasted_patches(x, paste, gen)
    if shadow > 0:
        x = shadows(x, shadow, gen)
    return color_jitter(x, *jitter, gen=gen)
