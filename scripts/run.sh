#!/usr/bin/env bash
# Start the tablelock demo on this machine: the coordinator (embedded Redis, data in ./.tablelock), a
# seeded store, its ERP simulator and three waiter pages. Arguments go to `tablelock demo`.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    echo "tablelock needs Python >= 3.11 as python3" >&2
    exit 1
fi
[ -x .venv/bin/python ] || python3 -m venv .venv
# Reinstall only when pyproject.toml (or the extras asked for) changed since the last install.
want="run $(sha256sum pyproject.toml | cut -d' ' -f1)"
if [ "$(cat .venv/.tablelock-run-stamp 2>/dev/null)" != "$want" ]; then
    .venv/bin/pip install -q -e .
    echo "$want" > .venv/.tablelock-run-stamp
fi

exec .venv/bin/tablelock demo "$@"
