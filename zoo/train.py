"""``zoo.train``: the public training API (``from zoo.train import RunConfig, fit``), kept where
users import it from. Each name is imported from its owner in ``zoo.engine`` (the loop lives in
:mod:`zoo.engine.train`); zoo's own modules import them from there, never from here."""
from zoo.engine.build_run import select_device, setup
from zoo.engine.config import RunConfig
from zoo.engine.evaluate import evaluate, evaluate_checkpoint
from zoo.engine.loaders import make_loaders
from zoo.engine.step import HeadPlan, step_losses
from zoo.engine.train import RunResult, Trainer, build_optimizer, build_scaler, fit, train_one_epoch

__all__ = ["HeadPlan", "RunConfig", "RunResult", "Trainer", "build_optimizer", "build_scaler", "evaluate",
           "evaluate_checkpoint", "fit", "make_loaders", "select_device", "setup", "step_losses", "train_one_epoch"]
