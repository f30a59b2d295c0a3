"""Issue 41 on descriptions: a description file is read only from a regular file and at most one byte past
its bound (a FIFO would block, /dev/zero never end), and BatchNorm momentum stays within (0, 1]."""

import os

import pytest

import effnet
from bounded import effnet_cli
from effnet.describe.network import MAX_DESCRIPTION_BYTES, NetworkSpec
from effnet.errors import UserError

B0 = effnet.get_description("efficientnet_b0")


@pytest.mark.parametrize("momentum", [5, 1.0001, 0, -0.1, float("nan")])
def test_batchnorm_momentum_outside_0_1_is_refused(momentum):
    with pytest.raises(UserError, match="bn_momentum") as caught:
        B0.with_(bn_momentum=momentum)
    assert caught.value.field == "bn_momentum"


@pytest.mark.parametrize("momentum", [1e-4, 0.01, 0.1, 1])
def test_batchnorm_momentum_within_0_1_is_kept(momentum):
    assert B0.with_(bn_momentum=momentum).bn_momentum == momentum


def test_a_description_file_with_momentum_5_is_one_line(tmp_path, cli):
    path = tmp_path / "d.json"
    B0.save(path)
    path.write_text(path.read_text().replace('"bn_momentum": 0.01', '"bn_momentum": 5'))
    code, out, err = cli("info", "--description", str(path))
    assert code == 2 and err.count("\n") == 1 and "bn_momentum must be within (0, 1], got 5" in err, err


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this system")
def test_a_fifo_description_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "d.json"
    os.mkfifo(fifo)
    with pytest.raises(UserError, match=r"description file .*d\.json is a FIFO, not a regular file"):
        NetworkSpec.load(fifo)
    code, out, err = effnet_cli("info", "--description", str(fifo), timeout=60)
    assert code == 2 and err.count("\n") == 1 and "is a FIFO" in err, err


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="no /dev/zero")
def test_dev_zero_as_a_description_is_refused_without_reading_it():
    with pytest.raises(UserError, match="description file /dev/zero is a character device"):
        NetworkSpec.load("/dev/zero")
    code, out, err = effnet_cli("info", "--description", "/dev/zero", timeout=60)
    assert code == 2 and err.count("\n") == 1 and "/dev/zero" in err, err


def test_an_oversized_description_is_refused_after_reading_its_bound(tmp_path):
    path = tmp_path / "big.json"
    path.write_bytes(b" " * (MAX_DESCRIPTION_BYTES + 10))
    with pytest.raises(UserError, match="is over 1,000,000 bytes"):
        NetworkSpec.load(path)


def test_a_missing_description_is_named(tmp_path):
    with pytest.raises(UserError, match="description file .*nothing.json does not exist"):
        NetworkSpec.load(tmp_path / "nothing.json")
