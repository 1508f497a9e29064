"""The output kinds a head declares (``Head.output_kind``): the vocabulary that the model (cropping
padding), the losses (their mode), the tasks, test-time augmentation, figures and ``zoo.predict``
read instead of a tensor's shape. It lives in core, below the heads that declare a kind and the
model that reads it (as smp keeps its loss modes in ``losses/constants.py``)."""

#: What a head's ``forward`` returns. The model (cropping padding), the losses (their mode), test-time
#: augmentation, figures and ``zoo.predict`` read this declaration, never the tensor's shape.
OUTPUT_KINDS = {
    "binary_mask": "[B, 1, H, W] foreground logits",
    "dense_classes": "[B, N, H, W] class logits (or log-probabilities) per pixel",
    "class_logits": "[B, N] class logits",
    "circle": "[B, 3] a circle (cx, cy, r) in pixels",
    "values": "[B, K] real values (regression)",
    "dense_values": "[B, C, H, W] real values per pixel (depth, normals); target [B, C, H, W], NaN where invalid",
}
#: the kinds with one value per pixel
DENSE_KINDS = ("binary_mask", "dense_classes", "dense_values")
#: the loss mode each kind trains in: smp's ``binary`` and ``multiclass``, ``regression``, and
#: ``dense_regression`` (per-pixel values whose invalid pixels, NaN in the target, are left out)
LOSS_MODES = {"binary_mask": "binary", "dense_classes": "multiclass", "class_logits": "multiclass",
              "circle": "regression", "values": "regression", "dense_values": "dense_regression"}
