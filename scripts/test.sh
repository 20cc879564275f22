#!/usr/bin/env bash
# The project's test command: installs what the tests need (Debian's prometheus package for
# promtool, the Python packages in .venv), then runs ruff, mypy --strict and pytest.
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -k config`.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v promtool >/dev/null 2>&1; then
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends prometheus
fi
command -v promtool >/dev/null 2>&1 || { echo "promtool is still missing" >&2; exit 1; }

python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[test]'

.venv/bin/ruff check .
.venv/bin/mypy
.venv/bin/pytest "$@"
