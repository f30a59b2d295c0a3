"""Issue 41 on the command side: run folders of other commands, Ctrl-C, the terminal's encoding, image
folders with FIFOs, corrupt files or names that are not UTF-8. Each command that could hang runs in a
subprocess under a time limit and a 6 GB address-space limit."""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

BLOCKS = "r1_k3_s22_e1_i8_o16_se0.25"
TRAIN = ["--blocks", BLOCKS, "--resolution", "16", "--epochs", "1", "--batch-size", "8", "--recipe", "small"]
LIMIT = 6 << 30


def _bounded(ignore_sigint: bool = False):
    def setup() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (LIMIT, LIMIT))
        if ignore_sigint:  # as a shell starts a job with `&`
            signal.signal(signal.SIGINT, signal.SIG_IGN)

    return setup


def _effnet(*argv: str, timeout: float = 120, env: dict | None = None, cwd: Path | None = None):
    return subprocess.run(
        [sys.executable, "-m", "effnet", *argv],
        capture_output=True,
        text=True,
        timeout=timeout,
        preexec_fn=_bounded(),
        env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})},
        cwd=cwd,
    )


def _one_line(code: int, err: str, *words: str, status: int = 2) -> None:
    assert code == status and err.count("\n") == 1 and "Traceback" not in err, (code, err)
    for word in words:
        assert word in err, err


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every file's size and time, the lock aside (claiming a folder records its holder there)."""
    return {
        str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in root.rglob("*")
        if p.name != ".effnet.lock"
    }


def _image_folder(root: Path, classes: tuple[str | bytes, ...] = ("a", "b"), per_class: int = 8) -> Path:
    for split in ("train", "val"):
        for name in classes:
            folder = os.path.join(os.fsencode(root / split), os.fsencode(name))
            os.makedirs(folder, exist_ok=True)
            for i in range(per_class):
                Image.new("RGB", (20, 20), (40 * i, 100, 200)).save(os.fsdecode(os.path.join(folder, b"%d.png" % i)))
    return root


# -- item 5: a folder that holds another command's run ------------------------------------------
@pytest.fixture(scope="module")
def train_run(tmp_path_factory):
    """A finished one-step training run."""
    folder = tmp_path_factory.mktemp("runs") / "trained"
    result = _effnet("train", *TRAIN, "--max-steps-per-epoch", "1", "--output", str(folder), "--json")
    assert result.returncode == 0, result.stderr
    return folder


@pytest.mark.parametrize(
    "argv",
    [
        ["pipeline", "--max-points", "1"],
        ["pipeline", "--max-points", "1", "--overwrite"],
        ["search-scaling", "--max-points", "1"],
        ["study-scaling"],
        ["nas", "--n-trials", "1"],
        ["nas", "--n-trials", "1", "--overwrite"],
    ],
    ids=lambda argv: " ".join(argv),
)
def test_a_training_run_is_not_another_commands_folder(cli, train_run, argv):
    before = _snapshot(train_run)
    code, out, err = cli(*argv, "--output", str(train_run))
    _one_line(code, err, "holds another command's run", "checkpoints/", "choose another folder")
    assert _snapshot(train_run) == before


def test_training_refuses_a_folder_holding_a_search(cli, tmp_path):
    from effnet.runs import write_record

    write_record(tmp_path, {"command": "search-scaling", "study": "search-scaling", "storage": "output"})
    before = _snapshot(tmp_path)
    for extra in ([], ["--overwrite"], ["--resume"]):
        code, out, err = cli("train", *TRAIN, "--output", str(tmp_path), *extra)
        _one_line(code, err, "holds another command's run", "command search-scaling")
    assert _snapshot(tmp_path) == before


def test_a_search_makes_its_figures_folder_records_its_run_and_a_study_refuses_it(cli, tmp_path):
    from effnet import NetworkSpec, parse_blocks
    from effnet.runs import RECORD_NAME
    from effnet.search.grid import search_scaling
    from effnet.search.proxy import Proxy

    spec = NetworkSpec(name="tiny", blocks=parse_blocks(BLOCKS), stem_channels=8, head_channels=32)
    proxy = Proxy(resolution=16, epochs=1, batch_size=8, max_steps_per_epoch=1)
    figure = tmp_path / "figures" / "new" / "grid.png"  # a missing folder is made before the search
    result = search_scaling(spec, proxy=proxy, output=tmp_path, n_trials=1, plot=figure)
    assert result.plot == str(figure) and figure.stat().st_size > 0
    assert json.loads((tmp_path / RECORD_NAME).read_text())["run"]["command"] == "search-scaling"
    code, out, err = cli("study-scaling", "--blocks", BLOCKS, "--output", str(tmp_path))
    _one_line(code, err, "holds another command's run", "command search-scaling")


# -- item 6: Ctrl-C ------------------------------------------------------------------------------
@pytest.mark.parametrize("inherited_ignore", [False, True], ids=["default", "started-with-&"])
def test_ctrl_c_during_training_exits_130_with_the_checkpoint_whole(tmp_path, inherited_ignore):
    from effnet.train.checkpoint import load_checkpoint

    out = tmp_path / "run"
    process = subprocess.Popen(
        [sys.executable, "-m", "effnet", "train", "--blocks", BLOCKS, "--resolution", "16", "--epochs", "1000",
         "--batch-size", "8", "--recipe", "small", "--checkpoint-every", "1", "--output", str(out), "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=_bounded(inherited_ignore),
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    last = out / "checkpoints" / "last.pt"
    deadline = time.monotonic() + 120
    while not last.exists() and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.1)
    assert last.exists(), process.communicate()[1] if process.poll() is not None else "no checkpoint in 120 s"
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=60)
    _one_line(process.returncode, stderr, "effnet train: interrupted", status=130)
    assert stdout == "" and load_checkpoint(last)["global_step"] >= 1
    assert not [p for p in out.rglob("*") if p.name.endswith(".effnet-tmp")]


# -- item 6: text the terminal cannot encode, names that are not UTF-8 ------------------------------
def test_predict_prints_a_non_ascii_name_on_an_ascii_terminal(tmp_path):
    import effnet

    spec = effnet.NetworkSpec(name="tiny", blocks=effnet.parse_blocks(BLOCKS), stem_channels=8, head_channels=32)
    weights = tmp_path / "tiny.safetensors"
    effnet.save_weights(effnet.create_model(spec, num_classes=2), weights, class_names=["café", "thé"])
    Image.new("RGB", (20, 20)).save(tmp_path / "été.png")
    result = _effnet("predict", "été.png", "--weights", str(weights), env={"PYTHONIOENCODING": "ascii"}, cwd=tmp_path)
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    assert "\\xe9t\\xe9.png" in result.stdout and "caf\\xe9" in result.stdout


def test_a_class_folder_named_in_another_encoding_is_trained_and_named(tmp_path):
    data = _image_folder(tmp_path / "data", classes=("a", b"b\xff"))
    result = _effnet("train", *TRAIN, "--data", str(data), "--max-steps-per-epoch", "1", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["class_names"] == ["a", os.fsdecode(b"b\xff")]
    shown = _effnet("train", *TRAIN, "--data", str(data), "--max-steps-per-epoch", "1")
    assert shown.returncode == 0 and "Traceback" not in shown.stderr, shown.stderr


# -- items 2 and 3: image folders that hold a FIFO or only corrupt files ----------------------------
@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this system")
def test_a_fifo_in_an_image_folder_is_a_named_skip(tmp_path):
    data = _image_folder(tmp_path / "data")
    os.mkfifo(data / "train" / "a" / "pipe.png")
    result = _effnet("train", *TRAIN, "--data", str(data), "--max-steps-per-epoch", "1", "--json", timeout=60)
    assert result.returncode == 0, result.stderr
    assert "skipped 1 file(s)" in result.stderr and "pipe.png" in result.stderr


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this system")
def test_resuming_from_a_fifo_checkpoint_is_one_line(train_run, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(train_run, run)
    (run / "checkpoints" / "last.pt").unlink()
    os.mkfifo(run / "checkpoints" / "last.pt")
    result = _effnet("train", *TRAIN, "--max-steps-per-epoch", "1", "--output", str(run), "--resume", timeout=60)
    _one_line(result.returncode, result.stderr, "last.pt is a FIFO, not a regular file")


def test_an_image_folder_of_corrupt_files_is_one_line(cli, tmp_path):
    for split in ("train", "val"):
        for name in ("a", "b"):
            (tmp_path / split / name).mkdir(parents=True)
            (tmp_path / split / name / "x.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    code, out, err = cli("train", *TRAIN, "--data", str(tmp_path))
    _one_line(code, err, "train holds no readable images (skipped 2 file(s)", "x.png")
