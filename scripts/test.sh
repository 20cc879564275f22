#!/usr/bin/env bash
# The project's test command: installs what the tests need (Debian's prometheus and
# prometheus-alertmanager packages, the Python packages in .venv), then runs ruff, mypy --strict and pytest.
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -k config`.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages the tests run for real: Prometheus and promtool, Alertmanager and amtool.
tools="promtool prometheus prometheus-alertmanager amtool"
missing() { for t in $tools; do command -v "$t" >/dev/null 2>&1 || return 0; done; return 1; }
if missing; then
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
    prometheus prometheus-alertmanager
fi
for t in $tools; do
  command -v "$t" >/dev/null 2>&1 || { echo "required tool $t is still missing" >&2; exit 1; }
done

python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[test]'

.venv/bin/ruff check .
.venv/bin/mypy
.venv/bin/pytest "$@"
