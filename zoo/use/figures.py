"""A prediction figure per run: inputs, true vs predicted masks / circles / classes."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from zoo.core.files import atomic_write_bytes  # noqa: E402
from zoo.engine.step import predictions, run_heads  # noqa: E402


def error_image(truth: torch.Tensor, pred: torch.Tensor) -> torch.Tensor:
    """``[H, W, 3]`` in [0, 1]: what went wrong where. A binary mask's false positives are red and false
    negatives blue (true positives grey); a class map's wrong pixels are red (right ones dark grey); ignored
    pixels (a negative label) black."""
    truth, pred = truth.long(), pred.long()
    out = torch.zeros(*truth.shape, 3)
    if max(int(truth.max()), int(pred.max())) <= 1:
        out[(truth == 1) & (pred == 1)] = 0.8
        out[(truth == 0) & (pred == 1)] = torch.tensor([1.0, 0.0, 0.0])
        out[(truth == 1) & (pred == 0)] = torch.tensor([0.0, 0.4, 1.0])
    else:
        out[truth == pred] = 0.25
        out[truth != pred] = torch.tensor([1.0, 0.0, 0.0])
    out[truth < 0] = 0.0  # an ignored pixel (label -1) is neither right nor wrong: black
    return out


def with_errors(panels: list[tuple[torch.Tensor, str]]) -> list[tuple[torch.Tensor, str]]:
    """A truth/prediction pair of masks gets a third panel, its errors (``error_image``)."""
    if [label for _, label in panels] == ["true", "pred"] and panels[0][0].shape == panels[1][0].shape \
            and panels[0][0].dim() == 2:
        return [*panels, (error_image(panels[0][0], panels[1][0]), "errors")]
    return panels


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
    drawn = [[(h.name, title, with_errors(panels)) for h in heads
              for title, panels in [model.heads[h.name].figure_panels(sample, pred[h.name], h.target)]]
             for sample, pred, heads in rows]
    cols = 1 + max(sum(len(panels) for _, _, panels in d) for d in drawn)
    fig, axes = plt.subplots(len(rows), cols, figsize=(1.6 * cols, 1.6 * len(rows)), squeeze=False)
    for r, ((sample, _, _), d) in enumerate(zip(rows, drawn)):
        ax = axes[r][0]
        ax.imshow(sample["image"].permute(1, 2, 0).squeeze(-1).numpy(), cmap="gray")
        said = " ".join(f"{name}: {title}" for name, title, _ in d if title)  # class heads: true->pred
        ax.set_title(f"input{'  ' + said if said else ''}", fontsize=6)
        c = 1
        for name, _, panels in d:
            for img, label in panels:
                img = img.float()
                axes[r][c].imshow(img.numpy(), cmap="tab20" if img.max() > 1 else "gray", interpolation="nearest")
                axes[r][c].set_title(f"{name} {label}", fontsize=6)
                c += 1
    for ax in axes.flat:
        ax.axis("off")
    legend = any(label == "errors" for d in drawn for _, _, panels in d for _, label in panels)
    if legend:
        fig.suptitle("errors: false positives red, false negatives blue (a class map: wrong pixels red)", fontsize=6)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.25 / fig.get_figheight()) if legend else None)  # room for the legend
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)
