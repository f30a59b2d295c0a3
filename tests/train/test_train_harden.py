"""Training hardened (issue 18): every run its own folder (lock, refusal, --overwrite), Ctrl-C during a
checkpoint write, data errors never silent, devices and memory checked before anything is built, bounds
stated in --help."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import textwrap
import time
import warnings
import zlib
from pathlib import Path

import pytest
import torch

from effnet import NetworkSpec, UserError
from effnet.atomic import atomic_write_bytes, interrupts_deferred
from effnet.data import DataWarning, load_folder_splits
from effnet.runs import LOCK_NAME, folder_lock
from effnet.train import train_model
from effnet.train.checkpoint import load_checkpoint
from helpers import make_digit_folder

TINY = NetworkSpec(name="tiny", blocks="r1_k3_s22_e1_i8_o16_se0.25", stem_channels=8, head_channels=32, resolution=16)
BLOCKS = "r1_k3_s22_e1_i8_o16_se0.25"
RUN = dict(batch_size=16, recipe="small", progress=False, max_steps_per_epoch=1)
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def _ctrl_c_as_at_a_terminal() -> None:
    """A child's SIGINT as a terminal gives it, even where the test runner was started in the
    background (a non-interactive shell starts background jobs with SIGINT ignored, and that is inherited)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.fixture
def default_sigint():
    """This process's Ctrl-C raising KeyboardInterrupt for the test, whatever it was started with."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def train_argv(output: Path, *extra: str) -> list[str]:
    return [
        "train", "--blocks", BLOCKS, "--resolution", "16", "--epochs", "1", "--batch-size", "8",
        "--max-steps-per-epoch", "1", "--recipe", "small", "--output", str(output), "--json", *extra,
    ]  # fmt: skip


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` (the lock file aside) with a hash of its bytes."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != LOCK_NAME
    }


# -- every run its own ---------------------------------------------------------------------------------
def test_a_folder_holding_another_run_is_refused_and_left_as_it_was(tmp_path, capsys):
    train_model(TINY, epochs=3, output=tmp_path, **RUN)
    epochs = sorted(p.name for p in (tmp_path / "checkpoints").glob("epoch_*.pt"))
    assert epochs == ["epoch_0002.pt", "epoch_0003.pt"]
    before = snapshot(tmp_path)
    with pytest.raises(UserError, match="holds another run") as caught:
        train_model(TINY, epochs=1, seed=1, output=tmp_path, **RUN)
    assert caught.value.field == "output" and str(caught.value).startswith(f"output {tmp_path}")
    assert snapshot(tmp_path) == before  # nothing replaced, no checkpoint pruned

    capsys.readouterr()
    report = train_model(TINY, epochs=1, seed=1, output=tmp_path, overwrite=True, **RUN)
    err = capsys.readouterr().err
    assert (
        err.count("\n") == 1 and "overwrite: removing" in err and "checkpoints/" in err and "model.safetensors" in err
    )
    assert sorted(p.name for p in (tmp_path / "checkpoints").glob("epoch_*.pt")) == ["epoch_0001.pt"]
    assert json.loads((tmp_path / "report.json").read_text())["seed"] == 1 == report.seed
    assert load_checkpoint(tmp_path / "checkpoints" / "last.pt")["config"]["seed"] == 1


def test_resume_and_overwrite_exclude_each_other_and_need_a_folder(tmp_path):
    with pytest.raises(UserError) as caught:
        train_model(TINY, epochs=1, output=tmp_path, resume=True, overwrite=True, **RUN)
    assert caught.value.field == "overwrite"
    with pytest.raises(UserError) as caught:
        train_model(TINY, epochs=1, overwrite=True, **RUN)
    assert caught.value.field == "overwrite"


def test_resume_without_a_checkpoint_never_starts_over_beside_another_run(tmp_path):
    train_model(TINY, epochs=1, output=tmp_path, **RUN)
    (tmp_path / "checkpoints" / "last.pt").unlink()
    before = snapshot(tmp_path)
    with pytest.raises(UserError, match="without last.pt to continue from") as caught:
        train_model(TINY, epochs=2, output=tmp_path, resume=True, **RUN)
    assert caught.value.field == "output" and snapshot(tmp_path) == before


def test_cli_second_run_on_one_folder_is_one_line_and_overwrite_says_what_it_removes(tmp_path, cli):
    out = tmp_path / "run"
    code, first, err = cli(*train_argv(out))
    assert code == 0, err
    before = snapshot(out)
    code, stdout, err = cli(*train_argv(out, "--seed", "1"))
    assert code == 2 and stdout == "" and err.count("\n") == 1
    assert err.startswith(f"effnet train: error: --output {out} holds another run") and snapshot(out) == before
    code, stdout, err = cli(*train_argv(out, "--resume", "--overwrite"))
    assert code == 2 and "not allowed with" in err and snapshot(out) == before
    code, stdout, err = cli(*train_argv(out, "--seed", "1", "--overwrite"))
    assert code == 0 and err.count("\n") == 1 and err.startswith(f"effnet: overwrite: removing the run in {out}")
    assert json.loads(stdout)["seed"] == 1


def test_a_locked_folder_names_its_holder(tmp_path, cli):
    with folder_lock(tmp_path):
        holder = json.loads((tmp_path / LOCK_NAME).read_text())
        assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname()
        with pytest.raises(UserError, match="is in use by another run") as caught:
            train_model(TINY, epochs=1, output=tmp_path, overwrite=True, **RUN)
        assert f"host {socket.gethostname()}, pid {os.getpid()}" in str(caught.value)
        assert caught.value.field == "output" and not (tmp_path / "checkpoints").exists()
    train_model(TINY, epochs=1, output=tmp_path, **RUN)  # released: the folder is free again


@pytest.mark.slow
def test_two_train_processes_on_one_output_the_second_stops_at_once(tmp_path):
    """A long run holds the folder; a second one, even with --overwrite, stops with one line naming the
    first's host and pid and changes nothing; Ctrl-C then ends the first with 130 and "interrupted"."""
    out = tmp_path / "run"
    argv = train_argv(out)
    argv[argv.index("--epochs") + 1] = "100000"
    first = subprocess.Popen(
        [sys.executable, "-m", "effnet", *argv],
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_ctrl_c_as_at_a_terminal,
    )
    try:
        lock, deadline = out / LOCK_NAME, time.monotonic() + 240
        while time.monotonic() < deadline and first.poll() is None:
            if lock.exists() and f'"pid": {first.pid}' in lock.read_text():
                break
            time.sleep(0.05)
        deadline = time.monotonic() + 240
        while not (out / "checkpoints" / "epoch_0001.pt").exists() and first.poll() is None:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert first.poll() is None, first.stderr.read() if first.stderr else ""
        second = subprocess.run(
            [sys.executable, "-m", "effnet", *train_argv(out, "--overwrite")],
            env=ENV, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert second.returncode == 2 and second.stdout == "" and second.stderr.count("\n") == 1, second.stderr
        assert f"is in use by another run (host {socket.gethostname()}, pid {first.pid})" in second.stderr
        assert (out / "checkpoints" / "last.pt").exists()  # not removed by the second run
    finally:
        first.send_signal(signal.SIGINT)
        _, err = first.communicate(timeout=120)
    assert first.returncode == 130 and err.strip().splitlines()[-1] == "effnet train: interrupted"
    assert "Traceback" not in err and load_checkpoint(out / "checkpoints" / "last.pt")["global_step"] >= 1


# -- Ctrl-C during a checkpoint write ------------------------------------------------------------------
SLOW_SAVE = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    import torch

    ready, sent = Path(sys.argv[1]), Path(sys.argv[2])
    real_save, saves = torch.save, []

    class Slow:
        # Its third write() (the first tensor's record) waits until the test has sent SIGINT.
        def __init__(self, handle):
            self.handle, self.writes = handle, 0

        def write(self, data):
            self.writes += 1
            if self.writes == 3:
                ready.touch()
                deadline = time.monotonic() + 120
                while not sent.exists() and time.monotonic() < deadline:
                    time.sleep(0.01)
            return self.handle.write(data)

        def flush(self):
            return self.handle.flush()

    def save(obj, f, *args, **kwargs):  # the second checkpoint write is slow; a good last.pt exists by then
        saves.append(f)
        return real_save(obj, Slow(f) if len(saves) == 2 else f, *args, **kwargs)

    torch.save = save
    from effnet.cli.main import main

    raise SystemExit(main(sys.argv[3:]))
    """
)


def test_ctrl_c_during_a_checkpoint_write_exits_130_and_keeps_a_good_checkpoint(tmp_path):
    script, ready, sent, out = tmp_path / "slow.py", tmp_path / "ready", tmp_path / "sent", tmp_path / "run"
    script.write_text(SLOW_SAVE)
    argv = train_argv(out, "--checkpoint-every", "1")
    argv[argv.index("--max-steps-per-epoch") + 1] = "5"
    proc = subprocess.Popen(
        [sys.executable, str(script), str(ready), str(sent), *argv],
        env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=_ctrl_c_as_at_a_terminal,
    )  # fmt: skip
    deadline = time.monotonic() + 240
    while not ready.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert ready.exists(), proc.communicate()[1][-3000:]
    proc.send_signal(signal.SIGINT)  # lands inside torch.save's write
    sent.touch()
    stdout, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and stdout == "" and err == "effnet train: interrupted\n", err[-3000:]
    state = load_checkpoint(out / "checkpoints" / "last.pt")
    assert state["global_step"] == 2  # the write under way ended whole, then the interrupt
    assert not list((out / "checkpoints").glob(".*")) and not (out / "model.safetensors").exists()


def test_interrupts_deferred_delivers_after_the_block(tmp_path, default_sigint):
    handler, steps = signal.getsignal(signal.SIGINT), []
    with pytest.raises(KeyboardInterrupt):
        with interrupts_deferred():
            signal.raise_signal(signal.SIGINT)
            steps.append("after the signal")
    assert steps == ["after the signal"]

    def interrupted_write(handle):
        handle.write(b"first half ")
        signal.raise_signal(signal.SIGINT)
        handle.write(b"second half")

    from effnet.atomic import atomic_write

    target = tmp_path / "file.bin"
    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, interrupted_write)
    assert target.read_bytes() == b"first half second half" and list(tmp_path.iterdir()) == [target]
    assert signal.getsignal(signal.SIGINT) is handler


# -- data errors are never silent ---------------------------------------------------------------------
def _refuse_listing(monkeypatch, folder: Path) -> None:
    """Make ``folder`` unreadable as a permission would (root reads every folder, so chmod cannot)."""
    real = os.scandir

    def scandir(path="."):
        if not isinstance(path, int) and Path(path) == folder:  # shutil.rmtree passes descriptors
            raise PermissionError(13, "Permission denied", str(path))
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)


def test_an_unreadable_class_folder_is_an_error_naming_it(tmp_path, monkeypatch):
    root = make_digit_folder(tmp_path / "data")
    _refuse_listing(monkeypatch, root / "train" / "digit1")
    with pytest.raises(UserError, match=r"cannot read .*train/digit1: Permission denied"):
        load_folder_splits(root)


def test_an_unreadable_nested_folder_is_an_error_naming_it(tmp_path, monkeypatch):
    root = make_digit_folder(tmp_path / "data")
    nested = root / "val" / "digit2" / "more"
    nested.mkdir()
    _refuse_listing(monkeypatch, nested)
    with pytest.raises(UserError, match=r"cannot read .*val/digit2/more"):
        load_folder_splits(root)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads folders whatever their permissions")
def test_a_class_folder_without_permissions_is_an_error(tmp_path):
    root = make_digit_folder(tmp_path / "data")
    (root / "train" / "digit1").chmod(0)
    try:
        with pytest.raises(UserError, match="digit1"):
            load_folder_splits(root)
    finally:
        (root / "train" / "digit1").chmod(0o755)


def test_cli_unreadable_train_folder_is_one_line(tmp_path, monkeypatch, cli):
    root = make_digit_folder(tmp_path / "data")
    _refuse_listing(monkeypatch, root / "train")
    code, out, err = cli("train", "--data", str(root), "--epochs", "1")
    assert code == 2 and out == "" and err.count("\n") == 1
    assert f"cannot read {root / 'train'}: Permission denied" in err


def test_an_empty_class_folder_is_a_named_warning(tmp_path):
    root = make_digit_folder(tmp_path / "data")
    for image in (root / "train" / "digit2").iterdir():
        image.unlink()
    with pytest.warns(DataWarning, match=r"hold no readable images.*never sees.*digit2"):
        splits = load_folder_splits(root)
    assert splits.class_names == ["digit0", "digit1", "digit2"]


def bomb_png(path: Path, width: int, height: int) -> None:
    """A few dozen bytes of PNG whose header declares ``width × height`` pixels (the data is not there)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)))


def test_a_decompression_bomb_in_a_dataset_is_skipped_with_a_named_warning(tmp_path):
    root = make_digit_folder(tmp_path / "data")
    bomb_png(root / "train" / "digit0" / "bomb.png", 60_000, 60_000)  # 3.6 G pixels
    with pytest.warns(DataWarning, match=r"skipped 1 file\(s\) over the pixel limit of 89,478,485.*bomb\.png"):
        splits = load_folder_splits(root)
    assert len(splits.train) == 36 and not any(f.name == "bomb.png" for f in splits.train.files)


def test_the_pixel_limit_is_configurable(tmp_path, monkeypatch):
    root = make_digit_folder(tmp_path / "data")
    from PIL import Image

    Image.new("RGB", (64, 64)).save(root / "train" / "digit1" / "large.png")  # 4096 pixels
    monkeypatch.setenv("EFFNET_MAX_IMAGE_PIXELS", "1000")
    with pytest.warns(DataWarning, match=r"pixel limit of 1,000 \(EFFNET_MAX_IMAGE_PIXELS\).*large\.png"):
        splits = load_folder_splits(root)
    assert Image.MAX_IMAGE_PIXELS == 89_478_485  # PIL's own limit, for everything else, is left as it was
    assert len(splits.train) == 36  # the 16×16 digits are under the limit
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)
        splits.train.load(0)
    monkeypatch.setenv("EFFNET_MAX_IMAGE_PIXELS", "lots")
    with pytest.raises(UserError, match="EFFNET_MAX_IMAGE_PIXELS must be a whole number"):
        load_folder_splits(root)


# -- devices, memory and bounds, before anything is built -------------------------------------------------
@pytest.mark.parametrize(
    "device, message",
    [
        ("bogus", "--device must be cpu, cuda, cuda:N or mps, got 'bogus'"),
        ("meta", "--device must be cpu, cuda, cuda:N or mps"),
        (f"cuda:{torch.cuda.device_count() + 3}", "--device 'cuda:"),
        pytest.param(
            "cuda",
            "asks for a GPU",
            marks=pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU"),
        ),
    ],
)
def test_a_device_this_machine_lacks_is_one_line_before_anything_is_built(tmp_path, cli, device, message):
    out = tmp_path / "run"
    code, stdout, err = cli(*train_argv(out, "--device", device))
    assert code == 2 and stdout == "" and err.count("\n") == 1 and message in err, err
    assert not out.exists()


def test_a_run_that_cannot_fit_in_memory_is_refused_before_it_is_built(monkeypatch, cli, tmp_path):
    import importlib

    import effnet.train.trainer as trainer_module

    profile_module = importlib.import_module("effnet.models.profile")  # effnet.models.profile is also a function
    monkeypatch.setattr(profile_module, "available_memory_bytes", lambda device: 2 * 2**30)

    def never(*args, **kwargs):
        raise AssertionError("the model was built")

    monkeypatch.setattr(trainer_module, "EfficientNet", never)
    with pytest.raises(UserError, match=r"needs ~5\.0 GiB for training at batch 64 .*2\.0 GiB available") as caught:
        train_model("efficientnet_b0", epochs=1, batch_size=64, progress=False, max_steps_per_epoch=1)
    assert caught.value.field == "batch_size"
    out = tmp_path / "run"
    code, stdout, err = cli("train", "--epochs", "1", "--output", str(out))
    assert code == 2 and stdout == "" and err.count("\n") == 1 and "GiB available on cpu" in err
    assert not (out / "checkpoints").exists() and not (out / "tensorboard").exists()


@pytest.mark.parametrize("command", ["train", "finetune"])
def test_bounds_are_stated_in_help(cli, command):
    code, out, _ = cli(command, "--help")
    text = " ".join(out.split())
    assert code == 0
    for stated in ("1 to 4096", "1 to 100,000", "1 to 65,536", "--overwrite", "0 to 30"):
        assert stated in text, stated


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--epochs", "100001"], "--epochs must be a whole number ≤ 100000, got 100001"),
        (["--batch-size", "65537"], "--batch-size must be a whole number ≤ 65536, got 65537"),
        (["--resolution", "100000"], "--resolution must be a whole number of pixels ≤ 4096, got 100000"),
    ],
)
def test_bounds_are_one_line_before_the_data_loads(cli, monkeypatch, argv, message):
    import effnet.train.trainer as trainer_module

    def never(*args, **kwargs):
        raise AssertionError("the data was loaded")

    monkeypatch.setattr(trainer_module, "load_splits", never)
    code, out, err = cli("train", *argv)
    assert code == 2 and out == "" and err == f"effnet train: error: {message}\n"


def test_saving_over_a_folder_is_one_error(tmp_path):
    (tmp_path / "taken").mkdir()
    with pytest.raises(UserError, match="it is a folder"):
        atomic_write_bytes(tmp_path / "taken", b"x")
    (tmp_path / "file").write_text("in the way")
    with pytest.raises(UserError, match="a file of that name is in the way"):
        train_model(TINY, epochs=1, output=tmp_path / "file", **RUN)


# -- issue 41: every number finite and within its documented range; flags are booleans ---------------
@pytest.mark.parametrize(
    "setting, value, field",
    [
        ("lr", 1e308, "lr"),
        ("lr", float("nan"), "lr"),
        ("base_lr", float("inf"), "base_lr"),
        ("warmup_epochs", 1e308, "warmup_epochs"),
        ("decay_epochs", 1e-300, "decay_epochs"),
        ("decay_rate", 2.0, "decay_rate"),
        ("weight_decay", 1e308, "weight_decay"),
        ("momentum", 1.0, "momentum"),
        ("rmsprop_decay", 1.0, "rmsprop_decay"),
        ("eps", 0.0, "eps"),
        ("grad_clip", -1.0, "grad_clip"),
        ("ema_decay", "0.9", "ema_decay"),
        ("label_smoothing", 1.0, "label_smoothing"),
        ("randaugment_n", 1000, "randaugment_n"),
        ("workers", 10**6, "workers"),
        ("workers", 1.5, "workers"),
        ("keep_checkpoints", -1, "keep_checkpoints"),
        ("eval_batch_size", 0, "eval_batch_size"),
        ("crop_ratio", (0.0, 1.0), "crop_ratio"),
        ("crop_ratio", 5, "crop_ratio"),
        ("hflip", "no", "hflip"),
        ("nesterov", 1, "nesterov"),
        ("channels_last", "yes", "channels_last"),
    ],
)
def test_recipe_numbers_and_flags_are_checked_naming_the_setting(setting, value, field):
    from effnet.train.recipe import get_recipe

    with pytest.raises(UserError) as caught:
        get_recipe("small", **{setting: value})
    assert caught.value.field == field and str(caught.value).split()[:2] in ([field, "must"], ["recipe", field])


@pytest.mark.parametrize(
    "settings, field",
    [
        (dict(seed=2**64), "seed"),
        (dict(time_limit=1e308), "time_limit"),
        (dict(resume="no", output="x"), "resume"),
        (dict(progress="no"), "progress"),
    ],
)
def test_run_settings_are_checked_before_the_data_loads(settings, field):
    with pytest.raises(UserError) as caught:
        train_model(TINY, "/no/such/data", **settings)
    assert caught.value.field == field


def test_the_edges_of_the_ranges_are_accepted():
    from effnet.train.recipe import MAX_EPOCHS, MAX_LR, get_recipe

    recipe = get_recipe("small", lr=MAX_LR, warmup_epochs=MAX_EPOCHS, weight_decay=1.0, momentum=0.0, workers=0)
    assert recipe.lr == MAX_LR and get_recipe("small", crop_ratio=[0.5, 2]).crop_ratio == (0.5, 2.0)
