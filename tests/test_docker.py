"""The Dockerfile: hadolint-clean, and really built and run (scripts/docker-smoke.sh).

The smoke test starts Debian's dockerd on a private socket, builds the image on a base image made
with debootstrap (no registry is reachable), runs it in --demo mode read-only with no
capabilities, and fetches /readyz and /metrics. It needs root.
"""

from __future__ import annotations

import os
import re
import subprocess

import pytest

from tests.conftest import REPO, require_tool, venv_tool

DOCKERFILE = REPO / "Dockerfile"
SMOKE = REPO / "scripts" / "docker-smoke.sh"



@pytest.mark.tools
def test_dockerfile_is_hadolint_clean() -> None:
    result = subprocess.run([venv_tool("hadolint"), "--no-color", str(DOCKERFILE)],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == ""


def test_dockerfile_shape() -> None:
    text = DOCKERFILE.read_text(encoding="utf-8")
    instructions = [line.split(None, 1) for line in text.splitlines()
                    if line and not line.startswith((" ", "#"))]
    froms = [rest for op, rest in instructions if op == "FROM"]
    assert froms == ["${BASE_IMAGE} AS build", "${BASE_IMAGE}"]
    assert re.search(r"^ARG BASE_IMAGE=python:3\.11-slim", text, re.MULTILINE)
    final = text[text.rindex("\nFROM "):]
    assert re.search(r"^USER 65532:65532$", final, re.MULTILINE)
    assert re.search(r"^EXPOSE 9729$", final, re.MULTILINE)
    assert re.search(r'^ENTRYPOINT \["macie-exporter"\]$', final, re.MULTILINE)
    assert "COPY --from=build /opt/macie-exporter /opt/macie-exporter" in final
    assert not re.search(r"^RUN ", final, re.MULTILINE), "the final stage installs nothing"
    for label in ("title", "description", "source", "licenses", "version"):
        assert f"org.opencontainers.image.{label}=" in final


@pytest.mark.tools
def test_image_builds_and_serves_demo_metrics() -> None:
    for tool in ("dockerd", "docker", "debootstrap", "curl"):
        require_tool(tool)
    if os.geteuid() != 0:
        pytest.fail("the image smoke test starts dockerd, which needs root")
    result = subprocess.run(["bash", str(SMOKE)], cwd=REPO, capture_output=True, text=True,
                            timeout=1200, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "docker-smoke: OK:" in result.stderr
