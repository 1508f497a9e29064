"""A prediction figure per run: inputs, true vs predicted masks / circles / classes."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from zoo.core.files import atomic_write_bytes  # noqa: E402
from zoo.engine.step import predictions, run_heads  # noqa: E402


@torch.no_grad()
def prediction_figure(model, datasets: dict, plans, path: str | Path, device: torch.device, n: int = 6) -> Path:
    """Draw ``n`` test samples per stream: the input, then for each dense head truth and
    prediction side by side; class heads go into the titles. Written atomically as PNG."""
    import io

    model.eval()
    rows = []
    for stream, ds in datasets.items():
        heads = [p for p in plans if p.stream == stream]
        k = min(n, len(ds))
        batch = [ds[i] for i in range(k)]
        x = torch.stack([b["image"] for b in batch]).to(device)
        preds = predictions(model, run_heads(model, x, heads), x)
        for i in range(k):
            rows.append((batch[i], {a: b[i].cpu() for a, b in preds.items()}, heads))
    # Each head says what it draws (Head.figure_panels): class heads a title, dense heads panels.
    drawn = [[(h.name, *model.heads[h.name].figure_panels(sample, pred[h.name], h.target)) for h in heads]
             for sample, pred, heads in rows]
    cols = 1 + max(sum(len(panels) for _, _, panels in d) for d in drawn)
    fig, axes = plt.subplots(len(rows), cols, figsize=(1.6 * cols, 1.6 * len(rows)), squeeze=False)
    for r, ((sample, _, _), d) in enumerate(zip(rows, drawn)):
        ax = axes[r][0]
        ax.imshow(sample["image"].permute(1, 2, 0).squeeze(-1).numpy(), cmap="gray")
        ax.set_title(" ".join(f"{name}: {title}" for name, title, _ in d if title), fontsize=6)
        c = 1
        for name, _, panels in d:
            for img, label in panels:
                img = img.float()
                axes[r][c].imshow(img.numpy(), cmap="tab20" if img.max() > 1 else "gray", interpolation="nearest")
                axes[r][c].set_title(f"{name} {label}", fontsize=6)
                c += 1
    for ax in axes.flat:
        ax.axis("off")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)
