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
    from effnet.weights import load_model

    model, info = load_model(out / "model.safetensors")
    assert info.num_classes == 10 and info.class_names == [str(i) for i in range(10)]
