#!/usr/bin/env bash
# Install effnet with its test extras and run the whole test suite (the README's second command).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install -q -e ".[test]"
python3 -m pytest -q
