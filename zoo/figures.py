"""A prediction figure per run: inputs, true vs predicted masks / circles / classes."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from zoo.checkpoint import atomic_write_bytes  # noqa: E402


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
        out = model(x, heads=[h.name for h in heads])
        preds = model.predict({a: b.float() for a, b in out.items()}, size=tuple(x.shape[-2:]))
        for i in range(k):
            rows.append((batch[i], {a: b[i].cpu() for a, b in preds.items()}, heads))
    dense = max(sum(1 for h in heads if pred[h.name].dim() == 2) for _, pred, heads in rows)
    cols = 1 + 2 * dense
    fig, axes = plt.subplots(len(rows), cols, figsize=(1.6 * cols, 1.6 * len(rows)), squeeze=False)
    for r, (sample, pred, heads) in enumerate(rows):
        title = []
        for h in heads:
            if pred[h.name].dim() == 0:
                title.append(f"{h.name}: {int(sample[h.target])}->{int(pred[h.name])}")
        ax = axes[r][0]
        ax.imshow(sample["image"].permute(1, 2, 0).squeeze(-1).numpy(), cmap="gray")
        ax.set_title(" ".join(title), fontsize=6)
        c = 1
        for h in heads:
            if pred[h.name].dim() != 2:
                continue
            true_key = "circle_mask" if getattr(model.heads[h.name], "mode", None) else h.target
            for img, label in ((sample[true_key], "true"), (pred[h.name], "pred")):
                axes[r][c].imshow(img.float().numpy(), cmap="tab20" if img.max() > 1 else "gray", interpolation="nearest")
                axes[r][c].set_title(f"{h.name} {label}", fontsize=6)
                c += 1
    for ax in axes.flat:
        ax.axis("off")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)
