"""Circle geometry shared by the data (ground truth) and the circle head (predictions).

Convention: pixel (row i, column j) has centre (x=j, y=i); a circle (cx, cy, r) covers the
pixels whose centre lies within distance r of (cx, cy). Ground truth and predictions are
rasterized by the same function, so IoU compares like with like.
"""
from __future__ import annotations

import cv2
import numpy as np
import torch


def enclosing_circle(mask: np.ndarray) -> tuple[float, float, float]:
    """The minimum enclosing circle (cx, cy, r) of a mask's nonzero pixel centres (OpenCV).

    An empty mask gives (0, 0, 0), which rasterizes to nothing.
    """
    points = cv2.findNonZero(np.ascontiguousarray(mask, dtype=np.uint8))
    if points is None:
        return 0.0, 0.0, 0.0
    (cx, cy), r = cv2.minEnclosingCircle(points)
    return float(cx), float(cy), float(r)


def rasterize_circles(circles: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``[B, 3]`` circles (cx, cy, r) in pixels -> ``[B, H, W]`` boolean masks."""
    ys = torch.arange(height, device=circles.device, dtype=circles.dtype).view(1, height, 1)
    xs = torch.arange(width, device=circles.device, dtype=circles.dtype).view(1, 1, width)
    cx, cy, r = (circles[:, k].view(-1, 1, 1) for k in range(3))
    return (xs - cx) ** 2 + (ys - cy) ** 2 <= r**2


def rasterize_circle_np(circle: tuple[float, float, float], height: int, width: int) -> np.ndarray:
    """One circle -> ``[H, W]`` uint8 mask, same convention as :func:`rasterize_circles`."""
    t = torch.tensor([circle], dtype=torch.float64)
    return rasterize_circles(t, height, width)[0].numpy().astype(np.uint8)
