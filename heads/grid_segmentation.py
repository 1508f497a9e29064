"""Grid segmentation head: images that are a grid of tiles, one object per tile (the 2x2
MNIST composites), labelled "class of the tile's object where its intensity is above the
tile's own threshold, background elsewhere".

Per tile, from the encoder's deepest features pooled over the tile (and the tile's
intensity histogram for the threshold, ``heads/levels.py``), the head predicts the object's
class and one intensity threshold, and combines them into per-pixel log-probabilities:

    log p(class c) = log sigmoid(z) + log softmax(class logits_tile)[c]
    log p(background) = log sigmoid(-z)

where z is the pixel's foreground logit under the tile's threshold.

So every pixel of a tile gets the same class and a foreground decision that is monotone in
its intensity. Compared with a per-pixel decoder, the class is decided once per object
(as a classification head does) and the foreground boundary is one learned number per
tile. The head assumes the grid layout: use it where the task guarantees one (the
``semantic`` task's composites), the plain ``segmentation`` head elsewhere. The encoder
must pass the raw input on (``input_skip: true``).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from zoo.core.layers import positive_int, require_input_skip
from zoo.heads.base import Head
from zoo.heads.levels import GlobalThreshold


def log_sigmoid(z: torch.Tensor) -> torch.Tensor:
    """``F.logsigmoid`` written as min(z, 0) - log1p(exp(-|z|)): finite for any z in ONNX Runtime too,
    whose LogSigmoid/Softplus overflow to -inf at the +-1e4 logits the threshold head produces."""
    return torch.clamp(z, max=0) - torch.log1p(torch.exp(-z.abs()))


def grid_pool(f: torch.Tensor, grid: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Average and max over each cell of a ``rows x cols`` grid, with adaptive pooling's cell bounds
    (start floor(i*H/rows), end ceil((i+1)*H/rows)): the same numbers as ``F.adaptive_avg_pool2d`` /
    ``F.adaptive_max_pool2d``, written with slices so the head exports to ONNX (which has no
    adaptive max pooling)."""
    (rows, cols), (h, w) = grid, f.shape[-2:]
    avg, mx = [], []
    for i in range(rows):
        r0, r1 = (i * h) // rows, -(-(i + 1) * h // rows)
        for j in range(cols):
            c0, c1 = (j * w) // cols, -(-(j + 1) * w // cols)
            cell = f[..., r0:r1, c0:c1]
            avg.append(cell.mean((2, 3)))
            mx.append(cell.amax((2, 3)))
    shape = (*f.shape[:2], rows, cols)
    return torch.stack(avg, -1).view(shape), torch.stack(mx, -1).view(shape)


class GridSegmentationHead(Head):
    """Log-probabilities ``[B, num_classes, H, W]`` (use with ``ce``/``ce_dice`` like logits)."""

    default_loss, default_target = "ce_dice", "mask"  # when the task entry names neither

    export_note = "class log-probabilities [B, N, H, W] (tile classes and thresholds in the graph); class = argmax over dim 1"

    output_kind = "dense_classes"  # (so the task gives it the data's class count)

    needs_input_skip = True  # reads the raw input (features[0] at stride 1)
    needs_input_size = True  # tiles and histograms follow the unpadded image

    def __init__(self, channels: list[int], reductions: list[int], num_classes: int = 11, background: int = -1,
                 grid: tuple[int, int] | list[int] = (2, 2), threshold: str = "levels", histogram_bins: int = 64,
                 hidden: int = 128, dropout: float = 0.3, pool_levels: int = 2, initial_threshold: float = 0.4,
                 initial_scale: float = 64.0) -> None:
        super().__init__(channels, reductions)
        require_input_skip("grid_segmentation", reductions)
        self.num_classes = positive_int("num_classes", num_classes, minimum=2)
        bg = background % num_classes if isinstance(background, int) and -num_classes <= background < num_classes else None
        if bg is None:
            raise ValueError(f"background must be a class index in [-{num_classes}, {num_classes - 1}], got {background!r}")
        self.background = bg
        if (not isinstance(grid, (list, tuple)) or len(grid) != 2
                or not all(isinstance(g, int) and not isinstance(g, bool) and g >= 1 for g in grid)):
            raise ValueError(f"grid must be [rows, cols] of integers >= 1, got {grid!r}")
        self.grid = (int(grid[0]), int(grid[1]))
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        levels = positive_int("pool_levels", pool_levels)
        if levels > len(channels) - 1:
            raise ValueError(f"pool_levels must be at most {len(channels) - 1} (the encoder's feature levels), got {pool_levels}")
        self.pool_levels = list(range(len(channels) - levels, len(channels)))
        pooled = sum(2 * channels[i] for i in self.pool_levels)
        self.threshold = GlobalThreshold(pooled, threshold, hidden, histogram_bins, initial_threshold, initial_scale)
        self.classifier = nn.Sequential(nn.Dropout(float(dropout)), nn.Linear(pooled, num_classes - 1))

    def pooled(self, features: list[torch.Tensor], h: int, w: int) -> torch.Tensor:
        """Average and max of the deepest ``pool_levels`` feature maps over each tile: ``[B, tiles, C]``."""
        parts = []
        for i in self.pool_levels:
            r = self.reductions[i]
            f = features[i][..., : -(-h // r), : -(-w // r)]  # drop the model's padding
            parts += list(grid_pool(f, self.grid))
        return torch.cat(parts, 1).flatten(2).transpose(1, 2)

    def forward(self, features: list[torch.Tensor], size: tuple[int, int] | None = None) -> torch.Tensor:
        x = features[0].float().mean(1, keepdim=True)
        h, w = size or x.shape[-2:]
        x = x[..., :h, :w]
        rows, cols = self.grid
        if h % rows or w % cols:
            raise ValueError(f"grid_segmentation with grid {list(self.grid)} needs an image whose height and width "
                             f"divide into it; got {h}x{w}")
        # Per tile: pooled deep features over the tile's cells, and the tile's histogram.
        pooled = self.pooled(features, h, w)
        b, th, tw = x.shape[0], h // rows, w // cols
        tiles = x.reshape(b, rows, th, cols, tw).permute(0, 1, 3, 2, 4).reshape(b * rows * cols, th * tw)
        z = self.threshold(tiles, pooled.reshape(b * rows * cols, -1))  # [B * tiles, th * tw] foreground logits
        z = z.view(b, rows, cols, th, tw).permute(0, 1, 3, 2, 4).reshape(b, 1, h, w)
        cls = F.log_softmax(self.classifier(pooled).float(), 2)  # [B, tiles, K-1]
        cls_map = cls.transpose(1, 2).reshape(-1, self.num_classes - 1, rows, cols)
        cls_map = cls_map.repeat_interleave(th, 2).repeat_interleave(tw, 3)
        fg = log_sigmoid(z) + cls_map
        bg = log_sigmoid(-z)
        k = self.background
        return torch.cat([fg[:, :k], bg, fg[:, k:]], 1)

    def predict(self, output: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
        return output.argmax(1)
