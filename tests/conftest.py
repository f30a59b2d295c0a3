import os
import platform
import re

import pytest
import torch

# Deterministic, and polite on a 2-core machine when tests run in parallel.
torch.set_num_threads(max(1, int(os.environ.get("EFFNET_TEST_THREADS", "1"))))


@pytest.fixture
def cli(capsys):
    """Run the effnet CLI in-process: returns (exit status, stdout, stderr)."""
    from effnet.cli.main import main

    def run(*argv: str):
        try:
            code = main(list(argv))
        except SystemExit as exc:  # argparse errors
            code = exc.code
        out = capsys.readouterr()
        return code, out.out, out.err

    return run


def _cpu() -> tuple[str, list[str]]:
    """The CPU's model name and the instruction-set flags that change floating-point results here."""
    model, flags = platform.processor() or platform.machine(), []
    try:
        text = open("/proc/cpuinfo", encoding="utf-8").read()
    except OSError:
        return model, flags
    if match := re.search(r"^model name\s*:\s*(.+)$", text, re.M):
        model = match.group(1).strip()
    if match := re.search(r"^flags\s*:\s*(.+)$", text, re.M):
        wanted = re.compile(r"^(avx2|fma|avx512\w*|amx\w*|avx_vnni\w*|f16c)$")
        flags = sorted({f for f in match.group(1).split() if wanted.match(f)})
    return model, flags


def pytest_report_header(config):
    """What the suite runs on, so that a failure on a user's machine shows it (tests/README.md)."""
    model, flags = _cpu()
    return [
        f"cpu: {model}, {os.cpu_count()} logical cores; flags: {' '.join(flags) or 'none of avx2/avx512/amx'}",
        f"torch {torch.__version__} ({torch.backends.cpu.get_cpu_capability()}), "
        f"{torch.get_num_threads()} thread(s) per test process",
    ]


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """The same lines at the end, where ``pytest -q`` (the README's command) shows them too."""
    if config.option.verbose < 0 or exitstatus:
        terminalreporter.section("machine", sep="-")
        for line in pytest_report_header(config):
            terminalreporter.write_line(line)


@pytest.fixture(scope="module")
def int8_run(tmp_path_factory):
    """A three-class model in a weight file with class names (``int8_run.safetensors``), calibration images
    (``calib/``, with a subfolder and a non-image) and a labelled folder (``labelled/``): what export,
    quantize and predict tests run on."""
    from PIL import Image

    import effnet
    from effnet.weights import save_weights
    from helpers import INT8_RUN_BLOCKS, INT8_RUN_CLASSES, random_bn_stats

    def png(path, color, size=40):
        Image.new("RGB", (size, size + 7), color).save(path)

    root = tmp_path_factory.mktemp("int8_run")
    torch.manual_seed(0)
    model = effnet.create_model("efficientnet_b0", blocks=INT8_RUN_BLOCKS, num_classes=3, resolution=32)
    save_weights(random_bn_stats(model), root / "int8_run.safetensors", class_names=INT8_RUN_CLASSES)
    colors = {"red": (200, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 200)}
    (root / "calib" / "deeper").mkdir(parents=True)
    for i, (name, color) in enumerate(colors.items()):
        (root / "labelled" / name).mkdir(parents=True)
        for j in range(2):
            png(root / "labelled" / name / f"{j}.png", tuple(min(255, c + 20 * j) for c in color))
            png(root / "calib" / ("deeper" if j else "") / f"{i}{j}.png", tuple(c + 10 * j for c in color))
    (root / "calib" / "notes.txt").write_text("not an image")
    return root


@pytest.fixture(scope="module")
def b0():
    """B0 with seeded weights and BatchNorm statistics, in eval mode."""
    import effnet
    from helpers import random_bn_stats

    torch.manual_seed(0)
    return random_bn_stats(effnet.create_model("efficientnet_b0"))


@pytest.fixture(scope="module")
def b0_onnx(b0, tmp_path_factory):
    """``b0`` exported to ONNX (any input size) and its export report."""
    pytest.importorskip("onnxruntime")
    from effnet.export import export_model

    path = tmp_path_factory.mktemp("b0") / "b0.onnx"
    return path, export_model(b0, path, "onnx")


@pytest.fixture(scope="module")
def good_file(tmp_path_factory):
    """A valid three-class effnet weight file of a tiny network, for crafting hostile copies of it."""
    import effnet

    blocks = "r1_k3_s11_e1_i16_o8_se0.25,r1_k3_s22_e4_i8_o16_se0.25"
    path = tmp_path_factory.mktemp("w") / "tiny.safetensors"
    spec = effnet.NetworkSpec(name="tiny", blocks=effnet.parse_blocks(blocks), stem_channels=16, head_channels=64)
    effnet.save_weights(effnet.create_model(spec, num_classes=3), path, class_names=["a", "b", "c"])
    return path
