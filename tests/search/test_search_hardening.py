"""Search, study, pipeline and NAS inputs that must not hang, eat the machine or mix runs: bounded
grids, sweeps and spaces, storage timeouts, one run per output folder."""

import json
import os
import socket
import threading
import time

import pytest

from effnet.errors import UserError
from effnet.runs import LOCK_NAME, RECORD_NAME, claim_folder

TINY = "r1_k3_s11_e1_i32_o16_se0.25,r2_k3_s22_e4_i16_o24_se0.25"


def _one_line(code, err, start):
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith(start), err


@pytest.mark.parametrize(
    ("argv", "start"),
    [
        (["pipeline", "--grid-step", "1e-9"], "effnet pipeline: error: --grid-step 1e-09 gives 1,000,000,000 values"),
        (["search-scaling", "--blocks", TINY, "--grid-step", "0.002"], "effnet search-scaling: error: --grid-step"),
        (["search-scaling", "--blocks", TINY, "--grid-step", "0.01"], "effnet search-scaling: error: --max-points"),
        (["search-scaling", "--blocks", TINY, "--max-points", "5000"], "effnet search-scaling: error: --max-points"),
        (["search-scaling", "--blocks", TINY, "--seeds", "101"], "effnet search-scaling: error: --seeds"),
        (
            ["search-scaling", "--blocks", TINY, "--time-per-point", "5"],
            "effnet search-scaling: error: --time-per-point",
        ),
        (["study-scaling", "--blocks", TINY, "--depths", "1e9"], "effnet study-scaling: error: --depths must be"),
        (["study-scaling", "--blocks", TINY, "--phis", "0,100"], "effnet study-scaling: error: --phis must be"),
        (
            ["study-scaling", "--blocks", TINY, "--widths", ",".join(["1.5"] * 101)],
            "effnet study-scaling: error: --widths",
        ),
        (["nas", "--layers", "1000000000"], "effnet nas: error: --layers must be within ±16"),
        (["nas", "--kernels", "3,33"], "effnet nas: error: --kernels must be odd and at most 31"),
        (["nas", "--filters", "1e9"], "effnet nas: error: --filters must be within"),
    ],
)
def test_bounds_are_one_line_and_quick(cli, tmp_path, argv, start):
    began = time.perf_counter()
    code, _, err = cli(*argv, "--output", str(tmp_path / "out"))
    _one_line(code, err, start)
    assert time.perf_counter() - began < 20
    assert not (tmp_path / "out" / "study.db").exists()


@pytest.fixture
def silent_server():
    """A loopback socket that accepts connections and never answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    held = []

    def accept():
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            held.append(conn)

    threading.Thread(target=accept, daemon=True).start()
    yield server.getsockname()[1]
    server.close()
    for conn in held:
        conn.close()


@pytest.mark.slow
def test_a_server_that_never_answers_ends_in_one_line_within_30_s(cli, tmp_path, silent_server):
    pytest.importorskip("psycopg2", reason="psycopg2 is not installed (pip install 'effnet[postgres]')")
    began = time.perf_counter()
    url = f"postgresql://effnet@127.0.0.1:{silent_server}/db"
    code, _, err = cli(
        "search-scaling", "--blocks", TINY, "--resolution", "16", "--storage", url, "--output", str(tmp_path)
    )
    assert time.perf_counter() - began < 30
    _one_line(code, err, "effnet search-scaling: error: --storage postgresql+psycopg2://***@127.0.0.1:")
    assert "timeout expired (after 10 s)" in err


def test_a_second_run_on_a_held_folder_stops_at_once_naming_the_holder(cli, tmp_path):
    with claim_folder(tmp_path, record={"command": "pipeline", "study": "pipeline", "storage": "output"}, run_files=()):
        code, _, err = cli("pipeline", "--output", str(tmp_path), "--max-points", "1")
    _one_line(
        code,
        err,
        f"effnet pipeline: error: --output {tmp_path} is in use by another run (host {socket.gethostname()}, pid {os.getpid()})",
    )


def test_a_folder_that_holds_another_run_is_refused_and_left_as_it_was(cli, tmp_path):
    with claim_folder(tmp_path, record={"command": "nas", "study": "nas-rl", "storage": "output"}, run_files=()):
        pass
    (tmp_path / "best.json").write_text("{}")
    record = (tmp_path / RECORD_NAME).read_text()
    code, _, err = cli("pipeline", "--output", str(tmp_path), "--max-points", "1")
    _one_line(code, err, "effnet pipeline: error: --overwrite is needed to replace the other run in output")
    assert "command nas, study nas-rl" in err
    code, _, err = cli("nas", "--output", str(tmp_path), "--study-name", "other", "--n-trials", "1")
    _one_line(code, err, "effnet nas: error: --overwrite is needed")
    assert (tmp_path / RECORD_NAME).read_text() == record and (tmp_path / "best.json").read_text() == "{}"
    code, _, err = cli("pipeline", "--output", str(tmp_path / "new"), "--resume")
    _one_line(code, err, "effnet pipeline: error: --resume: output")
    code, _, err = cli("nas", "--output", str(tmp_path), "--resume", "--overwrite")
    assert code == 2 and "not allowed with argument" in err


def test_overwrite_replaces_and_the_same_run_continues(tmp_path, capsys):
    nas = {"command": "nas", "study": "nas-rl", "storage": "output"}
    with claim_folder(tmp_path, record=nas, run_files=("best.json",)):
        (tmp_path / "best.json").write_text("{}")
    (tmp_path / "mine.txt").write_text("the user's")
    with claim_folder(tmp_path, record=nas, run_files=("best.json",), resume=True):  # the same run: continues
        assert (tmp_path / "best.json").exists()
    pipeline = {"command": "pipeline", "study": "pipeline", "storage": "output"}
    with pytest.raises(UserError, match="^overwrite is needed") as caught:
        with claim_folder(tmp_path, record=pipeline, run_files=("final",)):
            pass
    assert caught.value.field == "overwrite"
    with claim_folder(tmp_path, record=pipeline, run_files=("best.json", "final"), overwrite=True):
        assert not (tmp_path / "best.json").exists() and (tmp_path / "mine.txt").exists()
    assert "overwrite: removing the run in" in capsys.readouterr().err
    assert json.loads((tmp_path / RECORD_NAME).read_text())["run"] == pipeline
    assert (tmp_path / LOCK_NAME).exists()  # left behind unlocked: the next run takes it
