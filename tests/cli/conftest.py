"""End-to-end tests of the ``effnet`` command: every test here is marked ``slow``
(``pytest -m "not slow"`` leaves them out for a quick run; scripts/test.sh and CI run everything)."""

from pathlib import Path

import pytest

HERE = Path(__file__).parent


def pytest_collection_modifyitems(config, items):
    for item in items:
        if HERE in Path(item.fspath).parents:
            item.add_marker(pytest.mark.slow)
