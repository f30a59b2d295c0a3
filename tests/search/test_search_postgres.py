"""Two search workers on one PostgreSQL study split the grid with no duplicates.

The test starts a throwaway PostgreSQL cluster on a free loopback port (initdb/pg_ctl from Debian's
``postgresql`` package, run as the ``postgres`` user when the tests run as root) and stops it.
"""

import glob
import json
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

import pytest

TINY = "r1_k3_s11_e1_i32_o16_se0.25,r2_k3_s22_e4_i16_o24_se0.25"


def _pg_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).resolve().parent if initdb and shutil.which("pg_ctl") else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def postgres_url():
    pytest.importorskip("psycopg2", reason="psycopg2 is not installed (pip install 'effnet[postgres]')")
    bin_dir = _pg_bin()
    if bin_dir is None:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) are not installed: apt-get install postgresql")
    prefix: list[str] = []
    if os.geteuid() == 0:  # the server refuses to run as root
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no 'postgres' user to run the server as")
        prefix = ["runuser", "-u", "postgres", "--"]
    root = Path(tempfile.mkdtemp(prefix="effnet-pg-"))
    if prefix:
        entry = pwd.getpwnam("postgres")
        os.chown(root, entry.pw_uid, entry.pw_gid)
    data, port = root / "data", _free_port()

    def run(*cmd: str) -> None:
        subprocess.run([*prefix, *cmd], check=True, capture_output=True, timeout=120)

    run(str(bin_dir / "initdb"), "-D", str(data), "-U", "effnet", "--auth=trust", "-E", "UTF8", "--no-locale")
    options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=50"
    run(str(bin_dir / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(root / "log"), "-w", "-t", "60", "start")
    try:
        import psycopg2

        conn = psycopg2.connect(host="127.0.0.1", port=port, user="effnet", dbname="postgres")
        conn.autocommit = True
        conn.cursor().execute("CREATE DATABASE effnet_test")
        conn.close()
        yield f"postgresql://effnet@127.0.0.1:{port}/effnet_test"
    finally:
        subprocess.run(
            [*prefix, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
            capture_output=True,
            timeout=120,
        )
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.slow
def test_two_workers_split_the_grid_without_duplicates(postgres_url, tmp_path):
    import optuna
    from optuna.trial import TrialState

    from effnet.search.storage import storage_url

    args = [
        "search-scaling",
        "--blocks",
        TINY,
        "--resolution",
        "16",
        "--epochs",
        "1",
        "--batch-size",
        "32",
        "--max-steps-per-epoch",
        "6",
        "--grid-step",
        "0.1",
        "--max-points",
        "6",
        "--storage",
        postgres_url,
        "--study-name",
        "two-workers",
        "--heartbeat",
        "5",
        "--json",
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    workers = [
        subprocess.Popen(
            [sys.executable, "-m", "effnet", *args, "--output", str(tmp_path / f"w{i}")],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    outputs = [w.communicate(timeout=400) for w in workers]
    for w, (_out, err) in zip(workers, outputs):
        assert w.returncode == 0, err
    study = optuna.load_study(study_name="two-workers", storage=storage_url(postgres_url))
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    per_point = Counter(t.user_attrs["point"] for t in complete)
    assert len(per_point) == 6 and set(per_point.values()) == {1}  # every point once, none twice
    assert not [t for t in study.trials if t.state == TrialState.FAIL]
    by_worker = Counter(t.user_attrs["worker"] for t in complete)
    assert len(by_worker) == 2, f"one worker trained everything: {by_worker}"
    pids = {f"{socket.gethostname()}:{w.pid}" for w in workers}
    assert set(by_worker) == pids
    for out, _ in outputs:  # both report the whole, finished grid
        result = json.loads(out)
        assert [t["state"] for t in result["trials"]] == ["COMPLETE"] * 6
