"""Multi-task strategies under data parallelism: two gloo processes give every rank the same
weights and state, and (where the maths makes it exact) the update of one process on the
global batch."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

import zoo

ROOT = Path(__file__).resolve().parents[1]
REG = zoo.load_registry()
STRATEGIES = REG.names("weightings")
# GradNorm steps its weights by a gradient of gradient norms: each rank's norms are of its own
# half batch, so the averaged step is the same on both ranks but not the global batch's.
NOT_EXACT = {"gradnorm"}
HEADS = ("a", "b", "c")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _problem():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(8, 5, generator=g)
    y = torch.randn(8, 3, generator=g)
    return x, y


def _train(name: str, x: torch.Tensor, y: torch.Tensor, steps: int = 3) -> dict:
    """A linear 'encoder' and one linear head per task; ``steps`` SGD steps under strategy ``name``."""
    from zoo.core import distributed as dist

    torch.manual_seed(1)
    enc = torch.nn.Linear(5, 4)
    heads = torch.nn.ModuleList(torch.nn.Linear(4, 1) for _ in HEADS)
    w = REG.build("weightings", name, names=list(HEADS), weights={h: 1.0 for h in HEADS})
    params = list(enc.parameters()) + list(heads.parameters()) + list(w.parameters())
    opt = torch.optim.SGD(params, lr=0.1)

    def losses():
        f = torch.tanh(enc(x))
        # positive losses (FAMO and the geometric mean take logarithms)
        return {h: (heads[i](f)[:, 0] - y[:, i]).pow(2).mean() + 0.1 for i, h in enumerate(HEADS)}

    for step in range(steps):
        opt.zero_grad()
        w.backward(losses(), list(enc.parameters()), task_params=list(heads.parameters()))
        dist.all_reduce_grads([p for p in params if p.requires_grad])
        opt.step()
        if w.wants_losses_after_step:
            with torch.no_grad():
                w.after_step(losses())
        w.epoch_end({})  # every step an "epoch": DWA's state moves too
    return {"params": [p.detach().clone() for p in params], "weights": w.weights(),
            "state": {k: v.detach().clone() for k, v in w.state_dict().items() if torch.is_tensor(v)}}


def _worker(rank: int, port: int, out: str) -> None:
    import torch.distributed as td

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    td.init_process_group("gloo", rank=rank, world_size=2)
    x, y = _problem()
    results = {name: _train(name, x[rank::2], y[rank::2]) for name in STRATEGIES}
    torch.save(results, f"{out}/rank{rank}.pt")
    td.destroy_process_group()


def test_every_strategy_gives_every_rank_the_same_update(tmp_path):
    torch.set_num_threads(1)
    mp.spawn(_worker, args=(_free_port(), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in (0, 1))
    x, y = _problem()
    inexact = []
    for name in STRATEGIES:
        a, b = r0[name], r1[name]
        for p, q in zip(a["params"], b["params"]):
            assert torch.equal(p, q), f"{name}: parameters differ between ranks"
        assert a["weights"] == b["weights"], f"{name}: weights differ between ranks"
        for k in a["state"]:
            assert torch.equal(a["state"][k], b["state"][k]), f"{name}: state {k} differs between ranks"
        single = _train(name, x, y)  # one process on the global batch
        same = all(torch.allclose(p, q, rtol=1e-4, atol=1e-6) for p, q in zip(a["params"], single["params"]))
        if name in NOT_EXACT:
            continue
        if not same:
            inexact.append(name)
    assert not inexact, f"2 ranks differ from one process on the global batch: {inexact}"


def torchrun_fits(tmp_path: Path, data_root: Path, strategies: list[str], **cfg: str) -> tuple[dict, dict]:
    """Two gloo processes train circlization 2 epochs under each strategy (``cfg``: more RunConfig
    fields); each rank's strategy weights and a hash of its model and strategy state, per strategy."""
    script = tmp_path / "ranks.py"
    script.write_text(f"""
import hashlib, json, os, sys, torch
from zoo.core import distributed as dist
from zoo.engine.config import RunConfig
from zoo.engine.train import fit
dist.init()
out = {{}}
for name in {strategies!r}:
    cfg = RunConfig(task="circlization", encoder="scratch", weighting=name, epochs=2, batch_size=8,
                    train_limit=48, test_limit=16, data_root={str(data_root)!r},
                    encoder_settings={{"width": 4, "depth": 2}}, **{cfg!r})
    r = fit(cfg, show_progress=False)
    h = hashlib.sha1()
    for t in list(r.model.state_dict().values()) + list(r.setup.weighting.state_dict().values()):
        if torch.is_tensor(t):
            h.update(t.detach().float().cpu().numpy().tobytes())
    out[name] = {{"weights": r.weights, "hash": h.hexdigest()}}
json.dump(out, open(os.path.join({str(tmp_path)!r}, f"rank{{dist.rank()}}.json"), "w"))
dist.shutdown()
""")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
           str(_free_port()), str(script)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    return r0, r1


def test_torchrun_fit_keeps_weighting_state_identical_on_both_ranks(tiny_mnist, tmp_path):
    """Two gloo processes train 2 epochs under strategies with every kind of state (learnable,
    per epoch, after each step, random, solver-based): each rank's weights, weighting state and
    model are identical at the end."""
    r0, r1 = torchrun_fits(tmp_path, tiny_mnist, ["uncertainty", "dwa", "famo", "rlw", "upgrad", "nash_mtl",
                                                  "imtl_l", "gradnorm"])
    assert r0.keys() == r1.keys() and len(r0) == 8
    for name in r0:
        assert r0[name] == r1[name], name
        assert len(r0[name]["weights"]) == 2


@pytest.mark.parametrize("name", ["upgrad", "mgda"])
def test_jacobian_strategies_run_under_bf16_autocast(name):
    """The CUDA failure of 2026-11-28 ("Expected grad_output to have type BFloat16"): under
    autocast some losses are bf16 and others float32."""
    torch.manual_seed(0)
    model = zoo.build_model("scratch", {"m": "binary_mask", "c": "classification"},
                            encoder_settings={"width": 4, "depth": 2})
    w = REG.build("weightings", name, names=["m", "c"], weights={"m": 1.0, "c": 1.0})
    x = torch.rand(4, 1, 16, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x)
        losses = {"m": torch.nn.functional.binary_cross_entropy_with_logits(out["m"][:, 0], (x[:, 0] > 0.5).float()),
                  "c": torch.nn.functional.cross_entropy(out["c"], torch.arange(4))}
    losses["m"] = losses["m"].to(torch.bfloat16)  # as the dice losses came out on CUDA
    w.backward(losses, list(model.encoder.parameters()), task_params=list(model.heads.parameters()))
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_a_stalled_rank_is_a_clear_error_not_a_hang(tmp_path):
    """Rank 1 stops (SIGSTOP) mid-epoch: rank 0 gives up after ZOO_DIST_TIMEOUT seconds with one line
    naming itself and where it waited, instead of waiting forever."""
    import signal
    import time

    script = tmp_path / "stall.py"
    script.write_text("""
import os, signal, sys, torch
from zoo.core import distributed as dist
dist.init()
dist.at("epoch 2, step 7 of 40")
if dist.rank() == 1:
    os.kill(os.getpid(), signal.SIGSTOP)
dist.at("epoch 2, step 8 of 40")
try:
    dist.mean(torch.ones(1))
except dist.StalledRanks as exc:
    print(exc, file=sys.stderr)
    sys.exit(3)
""")
    port = str(_free_port())
    procs = []
    for rank in (0, 1):
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "MASTER_ADDR": "127.0.0.1",
               "MASTER_PORT": port, "RANK": str(rank), "WORLD_SIZE": "2", "LOCAL_RANK": str(rank),
               "ZOO_DIST_TIMEOUT": "5"}
        procs.append(subprocess.Popen([sys.executable, str(script)], env=env, stderr=subprocess.PIPE, text=True))
    try:
        t0 = time.monotonic()
        _, err = procs[0].communicate(timeout=120)
        assert procs[0].returncode == 3, err[-2000:]
        assert time.monotonic() - t0 < 90
        assert "rank 0 of 2 waited more than 5 s for the other ranks at epoch 2, step 8 of 40" in err, err[-2000:]
        assert "rank 1 was last at epoch 2, step 7 of 40" in err, err[-2000:]
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGKILL)
                p.wait()
