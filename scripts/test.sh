#!/usr/bin/env bash
# The project's test command: installs what the tests need (Debian's prometheus,
# prometheus-alertmanager, nodejs, npm, docker.io, debootstrap and curl packages, the Python
# packages in .venv, the npm packages of grafana/schema-check), then runs ruff, mypy --strict and
# pytest.
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -k config`.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages the tests run for real, by the command each provides: Prometheus and promtool,
# Alertmanager and amtool; Node.js and npm for the dashboard's schema check; dockerd, debootstrap
# and curl for the image smoke test (scripts/docker-smoke.sh). Only the packages whose commands
# are missing get installed.
packages=""
for pair in promtool:prometheus prometheus:prometheus prometheus-alertmanager:prometheus-alertmanager \
            amtool:prometheus-alertmanager node:nodejs npm:npm dockerd:docker.io docker:docker.io \
            debootstrap:debootstrap curl:curl; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || packages="$packages ${pair#*:}"
done
if [ -n "$packages" ]; then
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  # shellcheck disable=SC2086 # word splitting is wanted: one argument per package
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends $packages
fi
for tool in promtool prometheus prometheus-alertmanager amtool node npm dockerd docker debootstrap \
            curl; do
  command -v "$tool" >/dev/null 2>&1 || { echo "required tool $tool is still missing" >&2; exit 1; }
done

python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[test]'
# @grafana/schema and TypeScript for the dashboard's schema check, as pinned by package-lock.json.
(cd grafana/schema-check && npm ci --no-audit --no-fund --loglevel=error)

.venv/bin/ruff check .
.venv/bin/mypy
.venv/bin/pytest "$@"
