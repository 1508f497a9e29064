"""TensorBoard logs in a run's folder (``RUN_DIR/tensorboard``): per-epoch losses, validation
metrics, strategy weights and learning rate, and the prediction figure."""
from __future__ import annotations

from pathlib import Path
from typing import Any


def _writer(run_dir: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # pragma: no cover - tensorboard is a dependency; say what to install if it is missing
        raise ValueError("--tensorboard needs the tensorboard package: pip install tensorboard") from None
    return SummaryWriter(str(Path(run_dir) / "tensorboard"))


class TensorBoardLog:
    """One writer per run; ``epoch(row)`` logs a history row of ``fit``."""

    def __init__(self, run_dir: Path) -> None:
        self.writer = _writer(run_dir)

    def epoch(self, row: dict[str, Any]) -> None:
        step = row["epoch"]
        for name, value in row["losses"].items():
            self.writer.add_scalar(f"loss/{name}", value, step)
        for name, value in row["val"].items():
            self.writer.add_scalar(f"val/{name}", value, step)
        for name, value in row["weights"].items():
            self.writer.add_scalar(f"weight/{name}", value, step)
        self.writer.add_scalar("lr", row["lr"], step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def log_figure(run_dir: Path, png: Path, step: int) -> None:
    """Add a prediction figure (a PNG file) to the run's TensorBoard log."""
    import numpy as np
    from PIL import Image

    image = np.asarray(Image.open(png).convert("RGB"))
    writer = _writer(run_dir)
    writer.add_image("prediction", image, step, dataformats="HWC")
    writer.close()
