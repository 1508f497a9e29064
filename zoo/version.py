"""zoo's version: a leaf module, so what records it (model cards, rows) imports nothing else of zoo."""
__version__ = "0.1.0"
