"""The engine: one run built, trained and evaluated."""
