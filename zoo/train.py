"""``zoo.train``: the public training API (``from zoo.train import RunConfig, fit``), kept where
users import it from; the engine lives in :mod:`zoo.engine.train`."""
from zoo.engine.train import *  # noqa: F401,F403
from zoo.engine.train import __all__  # noqa: F401
