#!/usr/bin/env bash
# Install effnet with its test extras and run the whole test suite (the README's second command).
set -euo pipefail
cd "$(dirname "$0")/.."

# The search tests start a throwaway PostgreSQL server on loopback (initdb/pg_ctl from Debian's
# `postgresql` package). Install it when it is missing and we may (root); otherwise those tests skip.
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && ! command -v initdb >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing PostgreSQL (Debian package) for the multi-worker search tests" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
  else
    echo "note: PostgreSQL server binaries not found; the multi-worker search test will be skipped" \
      "(sudo apt-get install postgresql)" >&2
  fi
fi

python3 -m pip install -q -e ".[test]"
# Two test processes (pytest-xdist), one torch thread each (tests/conftest.py): about half the time of one
# process on 2 cores. EFFNET_TEST_WORKERS=0: one process. Extra arguments go to pytest (-m "not slow": quick run).
python3 -m pytest -q -n "${EFFNET_TEST_WORKERS:-2}" "$@"
