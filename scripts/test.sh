#!/usr/bin/env bash
# Run the test suite (all of it without arguments; arguments go to pytest).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    echo "tablelock needs Python >= 3.11 as python3" >&2
    exit 1
fi
[ -x .venv/bin/python ] || python3 -m venv .venv
# Reinstall only when pyproject.toml (or the extras asked for) changed since the last install.
want="test $(sha256sum pyproject.toml | cut -d' ' -f1)"
if [ "$(cat .venv/.tablelock-test-stamp 2>/dev/null)" != "$want" ]; then
    .venv/bin/pip install -q -e '.[test]'
    echo "$want" > .venv/.tablelock-test-stamp
fi

# The browser tests drive the system Chromium (and a CJK font, so screenshots show the Chinese
# text); install what is missing where we may (CI machines run as root).
missing=()
[ -x /usr/bin/chromium ] || missing+=(chromium)
dpkg -s fonts-wqy-microhei >/dev/null 2>&1 || missing+=(fonts-wqy-microhei)
if [ ${#missing[@]} -gt 0 ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${missing[@]}" >/dev/null
fi

exec .venv/bin/python -m pytest -q "$@"
