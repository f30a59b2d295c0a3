import os

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
