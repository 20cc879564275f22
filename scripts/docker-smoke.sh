#!/usr/bin/env bash
# Builds the Dockerfile for real and runs the image in --demo mode, with no registry access.
#
# Debian's dockerd is started on a private socket (no iptables, no bridge: the build and the
# container use the host network). The base image is made here: `debootstrap --variant=minbase
# bookworm` with python3, imported with `docker import` and passed as BASE_IMAGE. pip inside the
# build installs from wheels built on the host and served on loopback, so the build needs neither
# PyPI nor its certificates. The container runs read-only with every capability dropped; the
# script fetches /readyz and /metrics. dockerd is stopped by its PID and what it mounted is
# unmounted. Needs root; tests/test_docker.py runs it.
#
# Environment: SMOKE_CACHE (default /var/tmp/macie-exporter-docker-smoke) keeps the base image
# tarball between runs; DEBIAN_MIRROR (default http://deb.debian.org/debian).
set -euo pipefail
cd "$(dirname "$0")/.."

cache=${SMOKE_CACHE:-/var/tmp/macie-exporter-docker-smoke}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
image=macie-exporter:smoke
base_image=macie-exporter-smoke-base:bookworm

say() { echo "docker-smoke: $*" >&2; }
die() { say "FAILED: $*"; exit 1; }

[ "$(id -u)" = 0 ] || die "needs root (dockerd, debootstrap)"
for tool in dockerd docker debootstrap python3 curl; do
  command -v "$tool" >/dev/null 2>&1 || die "required tool $tool is not installed (see scripts/test.sh)"
done

# The wheels are built by the host's python3 for the image's Python (bookworm: 3.11).
python3 -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' \
  || die "the host's python3 must be 3.11, like the bookworm base image, to build its wheels"

work=$(mktemp -d /tmp/macie-docker-smoke.XXXXXX)
export DOCKER_HOST="unix://$work/docker.sock"
export DOCKER_BUILDKIT=0  # the classic builder: BuildKit's frontend would be pulled from a registry
http_pid=""

cleanup() {
  set +e
  if [ -S "$work/docker.sock" ]; then
    docker rm -f macie-exporter-smoke >/dev/null 2>&1
  fi
  [ -n "$http_pid" ] && kill "$http_pid" 2>/dev/null && wait "$http_pid" 2>/dev/null
  if [ -f "$work/docker.pid" ]; then
    pid=$(cat "$work/docker.pid")
    kill "$pid" 2>/dev/null
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
  fi
  # dockerd leaves its network namespace (and, if killed, overlay mounts) mounted under $work.
  awk -v w="$work" 'index($2, w) == 1 {print $2}' /proc/mounts | sort -r | while read -r mnt; do
    umount "$mnt" 2>/dev/null || umount -l "$mnt"
  done
  rm -rf "$work"
}
trap cleanup EXIT

# The base image: Debian bookworm (Python 3.11) with python3 and its venv module.
mkdir -p "$cache"
if [ ! -s "$cache/base-bookworm.tar" ]; then
  say "debootstrap bookworm from $mirror"
  timeout 600 debootstrap --variant=minbase --include=python3,python3-venv bookworm \
    "$work/rootfs" "$mirror" >"$work/debootstrap.log" 2>&1 \
    || { tail -20 "$work/debootstrap.log" >&2; die "debootstrap"; }
  rm -rf "$work"/rootfs/var/cache/apt/archives/*.deb "$work"/rootfs/var/lib/apt/lists/*
  tar -C "$work/rootfs" -cf "$cache/base-bookworm.tar.partial" .
  mv "$cache/base-bookworm.tar.partial" "$cache/base-bookworm.tar"
  rm -rf "$work/rootfs"
fi

# Wheels of the exporter's dependencies (and setuptools, its build backend), served on loopback.
say "building wheels on the host"
# From a copy of what the image copies, so that nothing (build/, *.egg-info) lands in the checkout.
mkdir -p "$work/src"
cp -r pyproject.toml README.md exporter "$work/src/"
timeout 300 python3 -m pip wheel -q --wheel-dir "$work/wheels" "$work/src" 'setuptools>=68' \
  || die "pip wheel"
http_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
python3 -m http.server --bind 127.0.0.1 --directory "$work/wheels" "$http_port" \
  >"$work/http.log" 2>&1 &
http_pid=$!

say "starting dockerd on $DOCKER_HOST"
dockerd --host "$DOCKER_HOST" --data-root "$work/data" --exec-root "$work/exec" \
  --pidfile "$work/docker.pid" --iptables=false --ip6tables=false --bridge=none \
  >"$work/dockerd.log" 2>&1 &
for _ in $(seq 1 300); do
  docker version >/dev/null 2>&1 && break
  sleep 0.1
done
docker version >/dev/null 2>&1 || { tail -30 "$work/dockerd.log" >&2; die "dockerd did not start"; }

timeout 300 docker import "$cache/base-bookworm.tar" "$base_image" >/dev/null || die "docker import"

say "docker build"
timeout 600 docker build --network host --build-arg "BASE_IMAGE=$base_image" \
  --build-arg "PIP_INSTALL_OPTIONS=--no-index --find-links=http://127.0.0.1:$http_port/" \
  -t "$image" . >"$work/build.log" 2>&1 || { tail -40 "$work/build.log" >&2; die "docker build"; }

user=$(docker image inspect "$image" --format '{{.Config.User}}')
[ "$user" = "65532:65532" ] || die "image user is '$user', want 65532:65532"
label=$(docker image inspect "$image" \
  --format '{{index .Config.Labels "org.opencontainers.image.version"}}')
version=$(python3 -c 'import exporter; print(exporter.__version__)')
[ "$label" = "$version" ] || die "image version label is '$label', want exporter.__version__ $version"
entrypoint=$(docker image inspect "$image" --format '{{json .Config.Entrypoint}}')
[ "$entrypoint" = '["macie-exporter"]' ] || die "entrypoint is $entrypoint"
docker image inspect "$image" --format '{{json .Config.ExposedPorts}}' | grep -q '"9729/tcp"' \
  || die "port 9729 is not exposed"
# shellcheck disable=SC2016 # $(...) is expanded by the container's shell
toolchain=$(docker run --rm --network none --entrypoint sh "$image" -c \
  'for t in gcc cc make pip pip3; do command -v $t; done; ls /root/.cache 2>/dev/null' || true)
[ -z "$toolchain" ] || die "the final stage carries build tools or caches: $toolchain"

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
say "docker run --demo on 127.0.0.1:$port"
docker run -d --name macie-exporter-smoke --network host --read-only --cap-drop ALL \
  --security-opt no-new-privileges "$image" \
  --demo "--web.listen-address=127.0.0.1:$port" --refresh.interval=1s >/dev/null \
  || die "docker run"

ready=""
for _ in $(seq 1 300); do
  if [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/readyz")" = 200 ]; then
    ready=yes
    break
  fi
  [ "$(docker inspect -f '{{.State.Running}}' macie-exporter-smoke)" = true ] || break
  sleep 0.1
done
[ -n "$ready" ] || { docker logs macie-exporter-smoke >&2; die "/readyz never answered 200"; }
curl -sf "http://127.0.0.1:$port/metrics" >"$work/metrics.txt" || die "GET /metrics"
grep -q '^macie_classification_job_info{' "$work/metrics.txt" \
  || { head -20 "$work/metrics.txt" >&2; die "no macie_classification_job_info in /metrics"; }
grep -Eq '^macie_exporter_refresh_success\{.*\} 1(\.0)?$' "$work/metrics.txt" \
  || die "no successful refresh in /metrics"
jobs=$(grep -c '^macie_classification_job_info{' "$work/metrics.txt")
say "OK: $image (version $label) serves /metrics ($jobs jobs in the demo account) as $user," \
  "read-only, no capabilities"
