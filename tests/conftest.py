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
