"""Torchrun runs that go wrong: a rank killed mid-run, a rank that never joins, a checkpoint resumed
with another number of processes, and a finished run that must leave no backend thread behind
(two tiny gloo processes on CPU)."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def _cfg(epochs: int, root: Path) -> dict:
    """The run every script here trains: 48 samples and a OneCycle schedule (its length follows the
    number of processes)."""
    return dict(task="circlization", encoder="scratch", weighting="fixed", epochs=epochs, batch_size=8, train_limit=48,
                test_limit=16, data_root=str(root), encoder_settings={"width": 4, "depth": 2}, schedule="onecycle")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), **extra}


def _torchrun(script: Path, cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(_free_port()),
           str(script), *args]
    return subprocess.run(cmd, env=_env(**env), capture_output=True, text=True, timeout=300, cwd=cwd)


def _gloo_threads_supported() -> bool:
    return Path("/proc/self/task").is_dir()


def test_a_killed_rank_is_one_true_line_not_a_timeout(tiny_mnist, tmp_path):
    """Rank 1 of a ``zoo.bench`` run is killed (SIGKILL) as epoch 2 starts: rank 0 says at once, in one
    line, that it lost rank 1 and where (exit 2), instead of claiming it waited the whole timeout; and it
    leaves the process group before exiting (its gloo threads alive at exit could abort it, exit -6)."""
    script = tmp_path / "killed.py"
    script.write_text(f"""
import atexit, json, os, signal, sys
from zoo.engine import train
from zoo.bench import main

def threads():
    return sorted(open(f"/proc/self/task/{{t}}/comm").read().strip() for t in os.listdir("/proc/self/task"))

atexit.register(lambda: json.dump(threads(), open(f"exit{{os.environ['RANK']}}.json", "w")))
epoch = train.Trainer.epoch

def killed(self, n, progress):  # the fault: rank 1 dies before epoch 2's first step
    if n == 2 and os.environ["RANK"] == "1":
        os.kill(os.getpid(), signal.SIGKILL)
    return epoch(self, n, progress)

train.Trainer.epoch = killed
sys.exit(main(["--task", "circlization", "--encoder", "scratch", "--epochs", "3", "--batch-size", "8", "--train-limit",
               "48", "--test-limit", "16", "--data-root", {str(tiny_mnist)!r}, "--out", "out", "--encoder-arg",
               "width=4", "--encoder-arg", "depth=2", "--quiet", "--no-figures", "--no-speed", "--no-baselines"]))
""")
    # two plain processes (no torchrun agent, which could stop rank 0 before it reports)
    port, procs = str(_free_port()), []
    for rank in (0, 1):
        env = _env(MASTER_ADDR="127.0.0.1", MASTER_PORT=port, RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank))
        procs.append(subprocess.Popen([sys.executable, str(script)], env=env, stderr=subprocess.PIPE, text=True,
                                      cwd=tmp_path))
    try:
        _, err = procs[0].communicate(timeout=240)
        procs[1].wait(timeout=60)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert procs[1].returncode == -signal.SIGKILL
    assert procs[0].returncode == 2, err[-3000:]
    lines = [line for line in err.splitlines() if "rank 0 of 2" in line]
    assert len(lines) == 1 and lines[0].startswith("error: rank 0 of 2 lost rank 1 at epoch 2, step 1 of "), err[-3000:]
    assert "died or exited" in lines[0] and "Connection" in lines[0], lines[0]
    assert "(rank 1 was last at the val evaluation)" in lines[0], lines[0]  # its last phase, not a stale step
    assert "waited more than" not in err and "Traceback" not in err, err[-3000:]
    assert "pair.cc" not in err and "frame #" not in err and "GLHF" not in err, err[-3000:]  # no C++ internals
    if _gloo_threads_supported():
        assert not [t for t in json.loads((tmp_path / "exit0.json").read_text()) if "gloo" in t]


def test_a_rank_that_never_joins_is_one_line_naming_it(tiny_mnist, tmp_path):
    """Under torchrun, rank 1 stalls before the process group forms: rank 0's ``zoo.bench`` ends after
    ZOO_DIST_TIMEOUT seconds with one line (exit 2), not a DistStoreError traceback."""
    script = tmp_path / "late.py"
    script.write_text(f"""
import os, sys, time
from zoo.bench import main
if os.environ["RANK"] == "1":
    time.sleep(120)
sys.exit(main(["--task", "circlization", "--encoder", "scratch", "--epochs", "1", "--train-limit", "48",
               "--test-limit", "16", "--data-root", {str(tiny_mnist)!r}, "--out", {str(tmp_path / "out")!r}, "--quiet",
               "--no-figures", "--no-speed", "--no-baselines"]))
""")
    t0 = time.monotonic()
    proc = _torchrun(script, tmp_path, ZOO_DIST_TIMEOUT="3")
    assert time.monotonic() - t0 < 90
    assert proc.returncode != 0
    err = proc.stderr
    lines = [line for line in err.splitlines() if "DistStoreError" in line or "rank 0 of 2" in line]
    assert len(lines) == 1, err[-3000:]
    assert lines[0].startswith("error: rank 0 of 2 waited more than 3 s for rank 1 to join the process group at "
                               "start-up: it stalled, died or never started"), lines[0]
    assert "ZOO_DIST_TIMEOUT sets the limit" in lines[0]
    assert "[rank0]: Traceback" not in err and "exitcode  : 2" in err, err[-3000:]  # rank 0 ended by itself, exit 2


def test_resuming_with_another_number_of_processes_is_refused_before_training(tiny_mnist, tmp_path):
    """A run interrupted under torchrun (2 processes) resumes under torchrun; with one process it is
    refused before anything trains, naming both counts, and so is a checkpoint that predates the
    recorded count (its OneCycle schedule has half the steps: it used to fail epochs later with
    "Tried to step N times")."""
    from zoo.engine.config import RunConfig
    from zoo.engine.train import fit
    from zoo.runs.rundir import new_run_dir, unfinished_run

    cfg = _cfg(2, tiny_mnist)
    config = RunConfig(**cfg)
    run_dir = new_run_dir(tmp_path / "out", config, "custom")  # where a grid looks for runs to continue
    script = tmp_path / "interrupted.py"
    script.write_text(f"""
import json, os, sys
from zoo.core import distributed as dist
from zoo.engine.config import RunConfig
from zoo.engine.train import fit

class Interrupted(Exception):
    pass

def stop(epoch, row):
    raise Interrupted  # as a kill after epoch 1 would: last.pt holds epoch 1

dist.init()
resume = {str(run_dir / "last.pt")!r} if sys.argv[1:] == ["resume"] else None
try:
    r = fit(RunConfig(**{cfg!r}), out_dir={str(run_dir)!r}, resume=resume, show_progress=False,
            on_epoch_end=None if resume else stop)
    json.dump({{"epochs": r.epochs}}, open(f"rank{{dist.rank()}}.json", "w"))
except Interrupted:
    pass
dist.shutdown()
""")
    proc = _torchrun(script, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    saved = torch.load(run_dir / "last.pt", weights_only=True)
    assert saved["epoch"] == 1 and saved["world_size"] == 2

    assert unfinished_run(tmp_path / "out", config, "custom") is None  # a one-process grid never continues it
    with pytest.raises(ValueError, match=r"last.pt was written by a run of 2 processes \(torchrun\) and this run has "
                                         r"one process: .* resume it under torchrun with 2 processes "
                                         r"\(--nproc_per_node 2\)"):
        fit(config, out_dir=run_dir, resume=run_dir / "last.pt", show_progress=False)
    assert torch.load(run_dir / "last.pt", weights_only=True)["epoch"] == 1  # nothing trained over it

    # a checkpoint from before the count was recorded: the schedule's length tells
    old = tmp_path / "old" / "last.pt"
    old.parent.mkdir()
    torch.save({k: v for k, v in saved.items() if k != "world_size"}, old)
    with pytest.raises(ValueError, match=r"learning-rate schedule of 6 steps and this run 12 .* another number of "
                                         r"processes \(torchrun\)"):
        fit(config, out_dir=old.parent, resume=old, show_progress=False)

    proc = _torchrun(script, tmp_path, "resume")  # under torchrun again: it continues to its end
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [json.loads((tmp_path / f"rank{r}.json").read_text())["epochs"] for r in (0, 1)] == [2, 2]


@pytest.mark.skipif(not _gloo_threads_supported(), reason="reads thread names from /proc")
def test_a_finished_torchrun_run_leaves_no_backend_thread(tiny_mnist, tmp_path):
    """After ``dist.shutdown`` no gloo thread is left: one alive at interpreter exit, still releasing
    the last collective's tensors, aborted rank 1 now and then ("terminate called without an active
    exception", torchrun exit 1). The group outlived destroy_process_group because a module imported
    after it (torch.distributed.nn, through timm's torch._dynamo) held it as a default argument."""
    script = tmp_path / "done.py"
    script.write_text(f"""
import json, os
from zoo.core import distributed as dist
from zoo.engine.config import RunConfig
from zoo.engine.train import fit

def threads():
    return sorted(open(f"/proc/self/task/{{t}}/comm").read().strip() for t in os.listdir("/proc/self/task"))

dist.init()
fit(RunConfig(**{_cfg(1, tiny_mnist)!r}), show_progress=False)
during = threads()
rank = dist.rank()
dist.shutdown()
json.dump({{"during": during, "after": threads()}}, open(f"threads{{rank}}.json", "w"))
""")
    proc = _torchrun(script, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for r in (0, 1):
        seen = json.loads((tmp_path / f"threads{r}.json").read_text())
        assert any("gloo" in t for t in seen["during"]), seen  # (the check can see them)
        assert not [t for t in seen["after"] if "gloo" in t], seen
