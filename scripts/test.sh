#!/usr/bin/env bash
# The project's test command, which CI runs (.ci/run): installs what the tests need (Debian's
# prometheus, prometheus-alertmanager, nodejs, npm, docker.io, debootstrap and curl packages, the
# Python packages in .venv, the npm packages of grafana/schema-check), then runs ruff, mypy
# --strict and pytest. It needs root (or sudo) for apt-get and for the image smoke test.
#
# `bash scripts/test.sh --fast` needs no root: it installs only the Python packages (no apt-get,
# no npm) and runs ruff, mypy and the tests not marked `tools`, i.e. every test that runs no
# external tool (Prometheus, promtool, Alertmanager, Helm, Node.js, hadolint, Docker Compose,
# dockerd, moto's server, cfn-lint), four at a time (pytest-xdist). The full run stays serial.
#
# Extra arguments go to pytest, e.g. `bash scripts/test.sh --fast -k config`.
set -euo pipefail
cd "$(dirname "$0")/.."

fast=""
if [ "${1:-}" = --fast ]; then
  fast=yes
  shift
fi

# Debian packages the tests run for real, by the command each provides: Prometheus and promtool,
# Alertmanager and amtool; Node.js and npm for the dashboard's schema check; dockerd, debootstrap
# and curl for the image smoke test (scripts/docker-smoke.sh). Only the packages whose commands
# are missing get installed.
install_debian_packages() {
  local packages="" pair tool sudo=""
  for pair in promtool:prometheus prometheus:prometheus \
              prometheus-alertmanager:prometheus-alertmanager amtool:prometheus-alertmanager \
              node:nodejs npm:npm dockerd:docker.io docker:docker.io debootstrap:debootstrap \
              curl:curl; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || packages="$packages ${pair#*:}"
  done
  if [ -n "$packages" ]; then
    [ "$(id -u)" = 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    # shellcheck disable=SC2086 # word splitting is wanted: one argument per package
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends $packages
  fi
  for tool in promtool prometheus prometheus-alertmanager amtool node npm dockerd docker \
              debootstrap curl; do
    command -v "$tool" >/dev/null 2>&1 || { echo "required tool $tool is still missing" >&2; exit 1; }
  done
}

[ -n "$fast" ] || install_debian_packages

# The venv is (re)installed when pyproject.toml or the interpreter changed since the last
# install; otherwise pip is not run at all (it takes ~15 s even with nothing to do).
stamp=".venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)-$(python3 -c 'import sys; print(sys.hexversion)')"
if [ ! -e "$stamp" ]; then
  python3 -m venv .venv
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e '.[test]'
  rm -f .venv/.installed-*
  touch "$stamp"
fi
if [ -z "$fast" ]; then
  # @grafana/schema and TypeScript for the dashboard's schema check, pinned by package-lock.json.
  (cd grafana/schema-check && npm ci --no-audit --no-fund --loglevel=error)
fi

# Byte-compiled modules and pytest's rewritten test modules are cached in __pycache__ (ignored
# by git): without the cache every worker and every exporter process compiles them again.
unset PYTHONDONTWRITEBYTECODE

.venv/bin/ruff check .
.venv/bin/mypy
if [ -n "$fast" ]; then
  # Four workers: the process tests mostly wait on the exporter and the simulator. Work
  # stealing keeps a worker from idling while another still holds a queue of tests.
  .venv/bin/pytest -m "not tools" -n 4 --dist worksteal "$@"
else
  .venv/bin/pytest "$@"
fi
