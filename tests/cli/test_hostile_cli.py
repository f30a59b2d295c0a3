"""A careless or hostile user, command by command: every mistake is one line on stderr, the right exit
status, no traceback, and nothing written or changed (issue 18's table)."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest

TINY = "r1_k3_s11_e1_i32_o16,r1_k3_s22_e4_i16_o24"


class _Marker:
    """Unpickling this creates a file: the test that loading never runs code."""

    def __reduce__(self):
        return (Path.touch, (Path(os.environ["EFFNET_TEST_MARKER"]),))


@pytest.fixture
def files(tmp_path, monkeypatch):
    """A working folder with the bad inputs the table names; the test runs in it."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("EFFNET_TEST_MARKER", str(tmp_path / "MARKER"))
    (tmp_path / "folder").mkdir()
    (tmp_path / "text.safetensors").write_text("not weights")
    (tmp_path / "blocks5.json").write_text('{"name": "x", "blocks": 5}')
    (tmp_path / "nonutf8.json").write_bytes(b'{"name": "\xff\xfe", "blocks": []}')
    (tmp_path / "lite_se.json").write_text('{"name": "x", "blocks": ["r1_k3_s1_e4_i32_o16_se0.25_c1"], "lite": true}')
    (tmp_path / "stem_break.json").write_text('{"name": "x", "blocks": ["r1_k3_s11_e1_i16_o16"], "stem_channels": 32}')
    with open(tmp_path / "evil.pth", "wb") as handle:
        pickle.dump({"state_dict": _Marker()}, handle)
    (tmp_path / "img.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    (tmp_path / "a_file").write_text("x")
    return tmp_path


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")}


# (argv, needle in stderr); exit status 2 unless given as a third item
CASES = [
    # describe and scale
    (["info", "efficientnet_b42"], "unknown model"),
    (["explain", "efficientnet_b42"], "unknown model"),
    (["explain"], "name a model"),
    (["explain", "efficientnetv2_m", "--base", "efficientnetv2_s"], "not a scaling of it"),
    (["explain", "efficientnet_b4", "--alpha", "0"], "--alpha"),
    (["explain", "--description", "/dev/zero"], "not a regular file"),
    (["info", "--blocks", "r1_k3_s11_e1_i32_oo16"], "'oo'"),
    (["info", "--blocks", ""], "name a model"),
    (["info", "--blocks", "r1000000000_k3_s11_e1_i32_o16"], "repeats"),
    (["info", "--blocks", "r1_k3_s11_e1_i32_o16_se2"], "se ratio"),
    (["info", "--blocks", "zz_r1_k3_s11_e1_i32_o16"], "'zz'"),
    (["info", "--blocks", "r1_k3_s1_e1_i32_o16_c9"], "conv type"),
    (["info", "--blocks", "r1_k3_s11_e1_i32_o16,r1_k3_s22_e6_i24_o40"], "stage 2"),
    (["info", "--blocks", "r1_k3_s11_e1_i32_o100000"], "channels"),
    (["info", "--blocks", "r1_k99_s11_e1_i32_o16"], "kernel"),
    (["info", "--blocks", "r1_k3_s11_e1000_i32_o16"], "expand ratio"),
    (["info", "--description", "missing.json"], "missing.json"),
    (["info", "--description", "blocks5.json"], "blocks must be block strings"),
    (["info", "--description", "nonutf8.json"], "UTF-8"),
    (["info", "--description", "lite_se.json"], "Lite"),
    (["info", "--description", "stem_break.json"], "the stem gives 32"),
    (["info", "--description", "folder"], "folder"),
    (["info", "b0", "--save", "folder"], "is a folder"),
    (["info", "b0", "--save", "no/such/dir/b0.json"], "does not exist"),
    (["info", "--blocks", TINY, "--image-size", "0"], "--image-size"),
    (["info", "--blocks", TINY, "--resolution", "100000"], "resolution"),
    (["scale", "--phi", "100"], "--phi must be ≤ 16"),
    (["scale", "--phi", "1e6"], "--phi must be ≤ 16"),
    (["scale", "--phi", "nan"], "--phi"),
    (["scale", "--phi", "-17"], "--phi must be ≥ -16"),
    (["scale", "--phi", "1", "--alpha", "-1"], "--alpha"),
    (["scale", "--phi", "10", "--alpha", "3"], "scales depth by"),
    (["scale", "--width", "1000"], "--width must be ≤ 64"),
    (["scale", "--depth", "0"], "--depth"),
    (["scale"], "--phi"),
    (["scale", "--base", "efficientnetv2_s", "--phi", "20"], "--phi"),
    (["models", "--bogus"], "unrecognized arguments"),
    # weights, prediction, export
    (["predict", "img.png", "--weights", "missing.safetensors"], "does not exist"),
    (["predict", "img.png", "--weights", "text.safetensors"], "text.safetensors"),
    (["predict", "img.png", "--weights", "evil.pth"], "refused"),
    (["predict", "img.png", "--weights", "folder"], "not a file"),
    (["predict", "img.png", "--weights", "lite0-imagenet", "--top", "0"], "--top"),
    (["predict", "missing.png", "--weights", "lite0-imagenet"], "no such file"),
    (["predict", "img.png", "--weights", "lite0-imagenet"], "img.png"),
    (["convert", "missing.pth", "--to", "out.safetensors", "--model", "b0"], "does not exist"),
    (["convert", "evil.pth", "--to", "out.safetensors", "--model", "b0"], "refused"),
    (["convert", "lite0-imagenet", "--to", "folder"], "is a folder"),
    (["convert", "lite0-imagenet", "--to", "no/such/dir/x.safetensors"], "does not exist"),
    (["convert", "lite0-imagenet", "--to", "x.safetensors", "--model", "efficientnet_b42"], "unknown model"),
    (["convert", "lite0-imagenet", "--to", "x.safetensors", "--from", "bogus"], "--from"),
    (["export", "--weights", "lite0-imagenet", "--format", "onnx", "-o", "folder"], "is a folder"),
    (["export", "--weights", "lite0-imagenet", "--format", "onnx", "-o", "x.onnx", "--opset", "1"], "--opset"),
    (["export", "--weights", "lite0-imagenet", "--format", "bogus", "-o", "x.onnx"], "--format"),
    (["export", "--weights", "evil.pth", "--format", "onnx", "-o", "x.onnx"], "refused"),
    (["evaluate", "--weights", "evil.pth", "--data", "folder"], "refused"),
    (["evaluate", "--weights", "lite0-imagenet", "--data", "folder"], "no class folders"),
    (["evaluate", "--weights", "lite0-imagenet", "--data", "a_file"], "not a folder"),
    (["evaluate", "--weights", "lite0-imagenet", "--data", "missing"], "does not exist"),
    (["evaluate", "--weights", "lite0-imagenet", "--data", "folder", "--top", "0"], "--top"),
    (["push", "--weights", "text.safetensors", "--repo", "a/b"], "truncated or corrupt"),
    (["push", "--weights", "evil.pth", "--repo", "a/b"], "convert it first"),
    (["push", "--weights", "text.safetensors", "--repo", "no-owner"], "--repo must name a Hub repository"),
    # training
    (["train", "--data", "missing", "--blocks", TINY], "does not exist"),
    (["train", "--data", "a_file", "--blocks", TINY], "not a folder"),
    (["train", "--data", "folder", "--blocks", TINY], "train/"),
    (["train", "--blocks", TINY, "--epochs", "0"], "--epochs"),
    (["train", "--blocks", TINY, "--resolution", "100000"], "resolution"),
    (["train", "--blocks", "r1_k3_s11_e1_i32_oo16"], "'oo'"),
    (["train", "--blocks", TINY, "--recipe", "bogus"], "unknown recipe"),
    (["train", "--blocks", TINY, "--set", "bogus=1"], "bogus"),
    (["train", "--blocks", TINY, "--set", "nokey"], "KEY=VALUE"),
    (["train", "--blocks", TINY, "--resume"], "--resume"),
    (["train", "--blocks", TINY, "--lr", "-1"], "--lr"),
    (["train", "--blocks", TINY, "--batch-size", "100000"], "batch"),
    (["train", "--model", "efficientnet_b42"], "unknown model"),
    # issue 41: every training number finite and within its documented range, checked before any work
    (["train", "--blocks", TINY, "--lr", "1e308"], "--lr must be ≤ 1e+30"),
    (["train", "--blocks", TINY, "--warmup-epochs", "1e308"], "--warmup-epochs must be ≤ 100000"),
    (["train", "--blocks", TINY, "--weight-decay", "1e308"], "--weight-decay must be ≤ 1"),
    (["train", "--blocks", TINY, "--threads", "100000"], "--threads must be a whole number ≤"),
    (["train", "--blocks", TINY, "--time-limit", "1e308"], "--time-limit must be ≤"),
    (["train", "--blocks", TINY, "--seed", str(10**30)], "--seed must be a whole number ≤"),
    (["train", "--blocks", TINY, "--set", "hflip=no"], "hflip must be True or False"),
    (["train", "--blocks", TINY, "--set", "momentum=1"], "momentum must be within [0, 1)"),
    (["train", "--blocks", TINY, "--set", "decay_epochs=1e-300"], "decay_epochs must be ≥ 0.001"),
    (["train", "--blocks", TINY, "--set", "crop_ratio=5"], "crop_ratio must be two numbers"),
    (["train", "--blocks", TINY, "--set", "workers=100000"], "--workers must be a whole number of processes ≤"),
    (["train", "--blocks", TINY, "--set", "seed=1"], "--set seed: seed is a setting of the run"),
    (["finetune", "--weights", "lite0-imagenet", "--data", "digits", "--lr", "1e308"], "--lr must be ≤ 1e+30"),
    (["finetune", "--weights", "missing.safetensors", "--data", "digits"], "does not exist"),
    (["finetune", "--weights", "evil.pth", "--data", "digits"], "refused"),
    (["finetune", "--weights", "lite0-imagenet", "--data", "digits", "--freeze-stages", "7"], "freeze_stages"),
    (["finetune", "--weights", "lite0-imagenet", "--data", "digits", "--freeze-epochs", "-1"], "--freeze-epochs"),
    # the method
    (["search-scaling", "--blocks", TINY, "--grid-step", "0"], "--grid-step"),
    (["search-scaling", "--blocks", TINY, "--tolerance", "-1"], "--tolerance"),
    (["search-scaling", "--blocks", TINY, "--alpha-range", "2,1"], "--alpha-range"),
    (["search-scaling", "--blocks", TINY, "--alpha-range", "x"], "--alpha-range"),
    (["search-scaling", "--blocks", TINY, "--storage", "bogus://x", "--output", "out"], "bogus"),
    (["search-scaling", "--blocks", TINY, "--resolution", "1"], "--resolution"),
    (["search-scaling", "--blocks", TINY, "--heartbeat", "0"], "--heartbeat"),
    (["study-scaling", "--blocks", TINY, "--depths", "1e9"], "depth"),
    (["study-scaling", "--blocks", TINY, "--families", "bogus"], "bogus"),
    (["study-scaling", "--blocks", TINY, "--resolutions", "0.0001"], "--resolutions value 0.0001 gives"),
    (["study-scaling", "--blocks", TINY, "--depths", "1e-9"], "--depths value 1e-09 is below what the network"),
    (["study-scaling", "--blocks", TINY, "--widths", "1e-9"], "--widths value 1e-09 is below what the network"),
    (["search-scaling", "--blocks", TINY, "--plot", "a_file/fig.png"], "--plot: cannot create folder a_file"),
    (["study-scaling", "--blocks", TINY, "--csv", "a_file/x.csv"], "--csv: cannot create folder a_file"),
    (["study-scaling", "--blocks", TINY, "--plot", "folder"], "is a folder"),
    (["nas", "--threads", "100000"], "--threads must be a whole number ≤"),
    (["search-scaling", "--budget-mode", "time", "--time-per-point", "1e308"], "--time-per-point must be ≤ 1e+09"),
    (["study-scaling", "--blocks", TINY, "--alpha", "1e308"], "--alpha must be ≤ 64"),
    (["pipeline", "--final-epochs", "100000000"], "--final-epochs must be a whole number ≤ 100000"),
    (["pipeline", "--final-resolution", "100000"], "--final-resolution must be a whole number of pixels ≤ 4096"),
    (["nas", "--target-macs", "1e308"], "--target-macs must be ≤ 1e+15 multiply-adds"),
    (["nas", "--latency", "--target-latency-ms", "1e308"], "--target-latency-ms must be ≤ 1e+06 ms"),
    (["nas", "--w=-1e308"], "--w must be ≥ -10"),
    (["plan"], "one of the arguments"),
    (["plan", "--macs", "1e5"], "over the budget"),
    (["fit-scaling", "missing"], "does not exist"),
    (["fit-scaling", "a_file"], "not a study CSV"),
    (["fit-scaling", "folder"], "holds no scaling_study.csv"),
    (["fit-scaling", "/dev/zero"], "not a regular file"),
    (["plan", "--macs", "2e9", "--params", "5M"], "not allowed with"),
    (["plan", "--macs", "lots"], "--macs"),
    (["pipeline", "--phi", "1", "--macs", "1e9"], "--phi"),
    (["nas", "--strategy", "bogus"], "--strategy"),
    (["nas", "--ops", "bogus"], "bogus"),
    (["nas", "--kernels", "4"], "kernels"),
    (["nas", "--n-trials", "0"], "--n-trials"),
    (["nas", "--latency"], "--target-latency-ms"),
    (["nas", "--target-latency-ms", "5"], "--latency"),
    (["nas", "--w", "1"], "--w must be ≤ 0"),
]


@pytest.mark.parametrize("case", CASES, ids=[" ".join(c[0])[:60] for c in CASES])
def test_mistake_is_one_line_and_changes_nothing(cli, files, case):
    argv, needle, *status = case
    before = _snapshot(files)
    code, out, err = cli(*argv)
    assert code == (status[0] if status else 2), (code, err)
    assert needle in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert not (files / "MARKER").exists()  # loading never ran code
    after = {k: v for k, v in _snapshot(files).items() if not k.startswith(("runs", ".effnet"))}
    assert after == before, sorted(set(after) ^ set(before))


def test_the_table_covers_every_command():
    from effnet.cli.main import COMMAND_MODULES, build_parser

    assert COMMAND_MODULES
    parser = build_parser()
    commands = next(a for a in parser._actions if a.dest == "command").choices
    assert set(commands) <= {c[0][0] for c in CASES} | {"pretrained", "quantize"}
    assert len(CASES) >= 60
