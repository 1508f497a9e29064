"""Task heads. Each depends only on the encoder's ``channels``/``reductions`` and its own
settings, maps a feature list to one tensor, and turns that tensor into a prediction with
``predict``."""
