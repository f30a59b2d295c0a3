"""Nothing lost: SIGKILL + --resume is bit-identical, NaN stops cleanly, DDP writes one weight file."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from effnet.train import TrainingDiverged, train_model
from effnet.train.checkpoint import load_checkpoint

BLOCKS = "r1_k3_s11_e1_i16_o16_se0.25,r1_k3_s22_e4_i16_o24_se0.25"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def train_command(output: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "effnet", "train", "--blocks", BLOCKS, "--resolution", "24", "--epochs", "2",
        "--batch-size", "8", "--max-steps-per-epoch", "40", "--recipe", "small", "--seed", "3", "--threads", "1",
        "--checkpoint-every", "5", "--set", "augment=randaugment", "--output", str(output), "--json", *extra,
    ]  # fmt: skip


def assert_same_weights(a: Path, b: Path) -> None:
    first, second = load_file(a), load_file(b)
    assert first.keys() == second.keys()
    for key in first:
        assert torch.equal(first[key], second[key]), key


@pytest.mark.slow
def test_sigkill_then_resume_is_bit_identical(tmp_path):
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    subprocess.run(train_command(whole), env=ENV, check=True, capture_output=True, timeout=300)

    proc = subprocess.Popen(train_command(killed), env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last = killed / "checkpoints" / "last.pt"
    deadline = time.monotonic() + 240
    while not last.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    state = load_checkpoint(last)
    assert state["global_step"] < 80 and not (killed / "model.safetensors").exists()

    resumed = subprocess.run(train_command(killed, "--resume"), env=ENV, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert_same_weights(whole / "model.safetensors", killed / "model.safetensors")
    for name in ("model", "ema"):
        a = load_checkpoint(whole / "checkpoints" / "last.pt")[name]
        b = load_checkpoint(last)[name]
        a, b = (a["module"], b["module"]) if name == "ema" else (a, b)
        assert all(torch.equal(a[k], b[k]) for k in a)
    assert (killed / "metrics.csv").read_text().count("\n") == 3  # header + 2 epochs, no duplicates


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    with pytest.raises(TrainingDiverged, match=r"loss became (nan|inf).*last good checkpoint"):
        train_model(
            _tiny(), epochs=2, batch_size=8, recipe="small", progress=False, max_steps_per_epoch=4,
            output=tmp_path, lr=1e30, checkpoint_every_steps=1,
        )  # fmt: skip
    state = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert state["global_step"] >= 1
    assert not (tmp_path / "model.safetensors").exists()


def test_nan_loss_cli_is_one_line_exit_2(tmp_path, cli):
    code, out, err = cli(
        "train", "--blocks", BLOCKS, "--resolution", "24", "--epochs", "1", "--batch-size", "8",
        "--max-steps-per-epoch", "3", "--recipe", "small", "--lr", "1e30", "--json",
    )  # fmt: skip
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "loss became" in err


def _tiny():
    from effnet import NetworkSpec

    return NetworkSpec(name="tiny", blocks=BLOCKS, stem_channels=16, head_channels=64, resolution=24)


@pytest.mark.slow
def test_torchrun_two_processes_write_one_weight_file(tmp_path):
    out = tmp_path / "ddp"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
        "-m", "effnet", "train", "--blocks", BLOCKS, "--resolution", "24", "--epochs", "1", "--batch-size", "8",
        "--max-steps-per-epoch", "3", "--recipe", "small", "--threads", "1", "--output", str(out), "--json",
    ]  # fmt: skip
    done = subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert sorted(p.name for p in out.glob("*.safetensors")) == ["model.safetensors"]
    import json

    report = json.loads(done.stdout)  # only rank 0 prints
    assert report["world_size"] == 2 and report["steps"] == 3
    assert report["images_per_second"] > 0 and 0 <= report["top1"] <= 1
    from effnet.factory import load_model

    model, info = load_model(out / "model.safetensors")
    assert info.num_classes == 10 and info.class_names == [str(i) for i in range(10)]


class _TouchOnLoad:
    """Unpickling this object would call ``Path.touch(marker)``: what a crafted checkpoint could run."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.mark.parametrize("writer", ["torch.save", "pickle"])
def test_crafted_checkpoint_is_refused_and_never_runs(tmp_path, cli, writer):
    import pickle

    marker = tmp_path / "MARKER"
    last = tmp_path / "run" / "checkpoints" / "last.pt"
    last.parent.mkdir(parents=True)
    state = {"format": "effnet-train-checkpoint/2", "model": {}, "payload": _TouchOnLoad(marker)}
    if writer == "torch.save":
        torch.save(state, last)
    else:
        last.write_bytes(pickle.dumps(state))
    code, out, err = cli(
        "train", "--blocks", BLOCKS, "--resolution", "24", "--epochs", "1", "--batch-size", "8",
        "--max-steps-per-epoch", "1", "--recipe", "small", "--output", str(tmp_path / "run"), "--resume", "--json",
    )  # fmt: skip
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "refusing to load checkpoint" in err and str(last) in err
    assert not marker.exists()


def test_pipeline_refuses_a_crafted_final_checkpoint_and_never_runs_it(tmp_path, cli):
    """The pipeline resumes its final training from final/checkpoints/last.pt: a crafted one is refused."""
    marker = tmp_path / "MARKER"
    last = tmp_path / "run" / "final" / "checkpoints" / "last.pt"
    last.parent.mkdir(parents=True)
    torch.save({"format": "effnet-train-checkpoint/2", "model": {}, "payload": _TouchOnLoad(marker)}, last)
    code, out, err = cli(
        "pipeline", "--output", str(tmp_path / "run"), "--max-points", "1", "--epochs", "1",
        "--max-steps-per-epoch", "2", "--final-epochs", "1", "--json",
    )  # fmt: skip
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "refusing to load checkpoint" in err and str(last) in err
    assert not marker.exists()


def test_run_state_round_trip_continues_bit_identically(tmp_path):
    """RunState.state_dict() through a checkpoint file (weights_only) into fresh objects: the same
    weights, EMA, optimiser, schedule, sampler position, progress and random numbers afterwards."""
    import random

    import numpy as np

    from effnet import create_model
    from effnet.data import ResumableSampler
    from effnet.train import get_recipe
    from effnet.train.checkpoint import save_checkpoint
    from effnet.train.ema import ModelEma
    from effnet.train.optim import build_optimizer, build_scheduler
    from effnet.train.state import Progress, RunState

    recipe = get_recipe("paper")

    def fresh(seed: int) -> RunState:
        torch.manual_seed(seed)
        model = create_model(_tiny(), num_classes=10).train()
        optimizer = build_optimizer(model, recipe, 0.01)
        scheduler = build_scheduler(optimizer, recipe, steps_per_epoch=4, total_steps=40)
        return RunState(model, ModelEma(model, 0.99), optimizer, scheduler, ResumableSampler(64, seed=3), 8)

    def step(state: RunState) -> None:
        loss = state.model(torch.randn(4, 3, 24, 24)).logsumexp(1).mean()
        state.optimizer.zero_grad()
        loss.backward()
        state.optimizer.step()
        state.scheduler.step()
        state.ema.update_parameters(state.model)

    first = fresh(0)
    for _ in range(3):
        step(first)
    first.progress = Progress(epoch=1, step_in_epoch=3, global_step=7, history=[{"epoch": 1, "top1": 0.5}],
                              epoch_loss_sum=6.5, epoch_loss_count=3, train_seconds=1.25, images_seen=56)  # fmt: skip
    save_checkpoint(tmp_path / "state.pt", first.state_dict())
    draws = (torch.rand(3), np.random.rand(3), random.random())
    step(first)

    second = fresh(1)
    second.load_state_dict(load_checkpoint(tmp_path / "state.pt"))  # weights_only=True
    assert second.progress == Progress(epoch=1, step_in_epoch=3, global_step=7, history=[{"epoch": 1, "top1": 0.5}],
                                       epoch_loss_sum=6.5, epoch_loss_count=3, train_seconds=1.25, images_seen=56)  # fmt: skip
    assert (second.sampler.epoch, second.sampler.start) == (1, 24) and second.ema.updates == 3
    assert second.scheduler.last_epoch == 3
    again = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(draws[0], again[0]) and np.array_equal(draws[1], again[1]) and draws[2] == again[2]
    step(second)
    for a, b in ((first.model, second.model), (first.ema.module, second.ema.module)):
        sa, sb = a.state_dict(), b.state_dict()
        assert all(torch.equal(sa[k], sb[k]) for k in sa)
