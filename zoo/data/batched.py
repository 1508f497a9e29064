"""The augmentation of ``zoo.data.augment`` as batched tensor ops on the training device.

``Augment`` defines the distribution (per sample: a whole-pixel shift, a rotation, a scale, an
elastic displacement field, a gamma curve); :class:`BatchAugment` draws a batch's parameters
at once, on the device that holds the images, from a ``torch.Generator`` of that device. The
affine and the elastic field are composed into one sampling grid, so one ``grid_sample`` call
warps the whole batch (``nearest`` copies pixels exactly as OpenCV's ``INTER_NEAREST`` does;
``linear`` blends and rounds back to 8 bits as OpenCV's ``uint8`` warp does). Gamma is a lookup
table gathered per sample, and Otsu's threshold is computed for every image of a batch from its
histogram (:func:`otsu_thresholds`), equal to OpenCV's on the same image.

One code path serves CPU and GPU; nothing here reads a value back to the host.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from zoo.data.augment import Augment


def _uniform(n: int, lo: float, hi: float, gen: torch.Generator | None, device: torch.device) -> torch.Tensor:
    return torch.rand(n, generator=gen, device=device, dtype=torch.float32) * (hi - lo) + lo


def gaussian_kernel(sigma: float, radius: int, device: torch.device) -> torch.Tensor:
    """OpenCV's Gaussian kernel for ``GaussianBlur(..., (0, 0), sigma)`` on float images: size
    ``round(8 sigma + 1) | 1``, here cut to ``radius`` on small images."""
    x = torch.arange(-radius, radius + 1, device=device, dtype=torch.float32)
    k = torch.exp(-(x**2) / (2 * sigma**2))
    return k / k.sum()


def blur(field: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of ``[B, C, H, W]`` with reflect-101 borders (OpenCV's default)."""
    _, c, h, w = field.shape
    radius = min(int(round(sigma * 8 + 1)) // 2, h - 1, w - 1)  # reflect padding must stay inside the image
    k = gaussian_kernel(sigma, radius, field.device)
    x = F.pad(field, (radius, radius, radius, radius), mode="reflect")
    x = F.conv2d(x, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(x, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


class BatchAugment:
    """:class:`Augment`'s settings applied to a batch ``[B, H, W]`` of uint8 images at once."""

    def __init__(self, augment: Augment) -> None:
        self.a = augment

    @property
    def active(self) -> bool:
        return self.a.active

    @property
    def rethresholds(self) -> bool:
        """Masks come from Otsu on the augmented image (gamma changes intensities; or asked for)."""
        return bool(self.a.gamma or self.a.rethreshold)

    def params(self, n: int, gen: torch.Generator | None, device: torch.device) -> dict[str, torch.Tensor]:
        """Per-sample parameters: shift (dx, dy) whole pixels, angle (degrees), scale, log gamma."""
        a = self.a
        shift = torch.randint(-a.shift, a.shift + 1, (n, 2), generator=gen, device=device).float()
        return {"shift": shift,
                "angle": _uniform(n, -a.rotate, a.rotate, gen, device),
                "scale": 1.0 + _uniform(n, -a.scale, a.scale, gen, device),
                "log_gamma": _uniform(n, -a.gamma, a.gamma, gen, device)}

    def __call__(self, images: torch.Tensor, gen: torch.Generator | None = None,
                 params: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """Warp (then change the intensity curve of) uint8 images ``[B, H, W]``; returns uint8."""
        if not self.active:
            return images
        p = params if params is not None else self.params(len(images), gen, images.device)
        out = self.warp(images, p, gen)
        if self.a.gamma:
            levels = torch.arange(256, device=images.device, dtype=torch.float32) / 255.0
            lut = torch.round(255.0 * levels[None] ** p["log_gamma"].exp()[:, None]).to(torch.uint8)  # [B, 256]
            out = lut.gather(1, out.flatten(1).long()).view_as(out)
        return out

    def warp(self, images: torch.Tensor, p: dict[str, torch.Tensor], gen: torch.Generator | None) -> torch.Tensor:
        a = self.a
        b, h, w = images.shape
        if not (a.shift or a.rotate or a.scale or a.elastic):
            return images
        dev = images.device
        ys, xs = torch.meshgrid(torch.arange(h, device=dev, dtype=torch.float32),
                                torch.arange(w, device=dev, dtype=torch.float32), indexing="ij")
        px, py = xs.expand(b, h, w), ys.expand(b, h, w)
        if a.elastic:
            # OpenCV's order: the affine warp, then remap(x + ex, y + ey) of its output; composed here
            # into one grid, so the image is sampled once
            field = blur(torch.rand(b, 2, h, w, generator=gen, device=dev) * 2 - 1, a.elastic_sigma)
            norm = a.elastic / field.abs().flatten(1).amax(1).clamp_min(1e-6)
            field = field * norm.view(b, 1, 1, 1)
            px, py = px + field[:, 0], py + field[:, 1]
        # cv2.getRotationMatrix2D(centre, angle, scale) plus the shift maps source -> output; invert it
        theta = p["angle"] * (math.pi / 180.0)
        alpha, beta = p["scale"] * torch.cos(theta), p["scale"] * torch.sin(theta)
        cx, cy = (w - 1) / 2, (h - 1) / 2
        tx = (1 - alpha) * cx - beta * cy + p["shift"][:, 0]
        ty = beta * cx + (1 - alpha) * cy + p["shift"][:, 1]
        det = (alpha**2 + beta**2).view(b, 1, 1)
        ux, uy = px - tx.view(b, 1, 1), py - ty.view(b, 1, 1)
        sx = (alpha.view(b, 1, 1) * ux - beta.view(b, 1, 1) * uy) / det
        sy = (beta.view(b, 1, 1) * ux + alpha.view(b, 1, 1) * uy) / det
        # pixel centres -> grid_sample's [-1, 1] (align_corners=True: -1 and 1 are the corner pixels' centres)
        grid = torch.stack([sx * (2.0 / max(w - 1, 1)) - 1, sy * (2.0 / max(h - 1, 1)) - 1], -1)
        mode = "nearest" if a.interpolation == "nearest" else "bilinear"
        out = F.grid_sample(images[:, None].float(), grid, mode=mode, padding_mode="zeros", align_corners=True)
        return out[:, 0].round().clamp(0, 255).to(torch.uint8)


def exact_float(device: torch.device) -> torch.dtype:
    """float64 where the device has it (counts and circle rasters exact), else float32."""
    return torch.float32 if device.type == "mps" else torch.float64  # MPS has no float64


def histograms(images: torch.Tensor) -> torch.Tensor:
    """``[B, 256]`` pixel counts of uint8 images ``[B, ...]`` (one scatter-add, no host sync)."""
    flat = images.flatten(1).long()
    dtype = exact_float(images.device)
    return torch.zeros(len(images), 256, device=images.device, dtype=dtype).scatter_add_(
        1, flat, torch.ones_like(flat, dtype=dtype))


def otsu_thresholds(images: torch.Tensor) -> torch.Tensor:
    """OpenCV's Otsu threshold (``THRESH_OTSU``) of every uint8 image of a batch: ``[B]`` int64.

    The between-class variance of every cut from cumulative sums of the histogram (float64), the
    first maximum wins and cuts where one class would be (almost) empty are skipped, as in
    OpenCV's ``getThreshVal_Otsu_8u``; a flat image gives 0. Where the maximum is a run of empty
    levels (any cut in the run makes the same mask) the chosen level may differ from OpenCV's by
    rounding, the mask ``image > t`` never does.
    """
    hist = histograms(images)
    p = hist / hist.sum(1, keepdim=True)
    levels = torch.arange(256, device=images.device, dtype=p.dtype)
    q1 = p.cumsum(1)
    m1 = (p * levels).cumsum(1)
    mu = m1[:, -1:]
    q2 = 1.0 - q1
    eps = 1.1920928955078125e-07  # FLT_EPSILON, OpenCV's cut-off
    ok = (torch.minimum(q1, q2) >= eps) & (torch.maximum(q1, q2) <= 1.0 - eps)
    mu1 = m1 / q1.clamp_min(eps)
    mu2 = (mu - m1) / q2.clamp_min(eps)
    sigma = torch.where(ok, q1 * q2 * (mu1 - mu2) ** 2, torch.zeros_like(q1))
    best = sigma.amax(1, keepdim=True)
    # the first level within rounding of the maximum (OpenCV's running "sigma > max_sigma")
    first = (sigma >= best * (1 - 1e-12)) & (best > 0)
    return torch.where(first.any(1), first.float().argmax(1), torch.zeros(len(images), device=images.device,
                                                                          dtype=torch.long))
