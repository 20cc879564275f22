"""Real Prometheus and Alertmanager processes (Debian packages) for end-to-end tests.

Loopback ports only, bounded waits, and every process is stopped by `stop()` (the fixtures
below call it at teardown).
"""

from __future__ import annotations

import json
import socket
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from tests.conftest import require_tool, wait_for


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http_json(url: str, data: bytes | None = None) -> Any:
    with urllib.request.urlopen(url, data=data, timeout=10) as response:
        return json.loads(response.read())


class ManagedProcess:
    url: str

    def __init__(self, command: list[str], workdir: Path, name: str) -> None:
        self.log_path = workdir / f"{name}.log"
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(command, cwd=workdir, stdout=self._log,
                                     stderr=subprocess.STDOUT)

    def logs(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise AssertionError(f"exited {self.proc.returncode}:\n{self.logs()[-3000:]}")

    def _ready(self) -> bool:
        """Both servers answer 200 on /-/ready once they serve."""
        self.check_alive()
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()


class Prometheus(ManagedProcess):
    """`prometheus` scraping `targets` every second and evaluating `rule_files` every second."""

    def __init__(self, workdir: Path, targets: Sequence[str], rule_files: Sequence[Path] = (),
                 alertmanager: str | None = None, metrics_path: str = "/metrics") -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config: dict[str, Any] = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s",
                       "scrape_timeout": "900ms"},
            "rule_files": [str(p) for p in rule_files],
            "scrape_configs": [{"job_name": "macie-exporter", "metrics_path": metrics_path,
                                "static_configs": [{"targets": list(targets)}]}],
        }
        if alertmanager:
            config["alerting"] = {"alertmanagers": [{"static_configs": [
                {"targets": [alertmanager]}]}]}
        config_path = workdir / "prometheus.yml"
        config_path.write_text(yaml.safe_dump(config), encoding="utf-8")
        super().__init__([
            require_tool("prometheus"), f"--config.file={config_path}",
            f"--storage.tsdb.path={workdir / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--rules.alert.resend-delay=1s", "--log.level=warn",
        ], workdir, "prometheus")
        wait_for(self._ready, timeout=30, what="Prometheus to be ready")


    def query(self, expr: str) -> list[dict[str, Any]]:
        """Instant query; the result vector (raises on a query error)."""
        url = f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        try:
            answer = http_json(url)
        except urllib.error.HTTPError as err:
            raise AssertionError(f"query {expr!r} failed: {err.read().decode()}") from None
        assert answer["status"] == "success", answer
        result: list[dict[str, Any]] = answer["data"]["result"]
        return result

    def targets_up(self) -> bool:
        active = http_json(f"{self.url}/api/v1/targets")["data"]["activeTargets"]
        return bool(active) and all(t["health"] == "up" for t in active)

    def alerts(self) -> list[dict[str, Any]]:
        alerts: list[dict[str, Any]] = http_json(f"{self.url}/api/v1/alerts")["data"]["alerts"]
        return alerts


class Alertmanager(ManagedProcess):
    """`prometheus-alertmanager` alone (no cluster) with the given config."""

    def __init__(self, workdir: Path, config: dict[str, Any]) -> None:
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.url = f"http://{self.address}"
        config_path = workdir / "alertmanager.yml"
        config_path.write_text(yaml.safe_dump(config), encoding="utf-8")
        super().__init__([
            require_tool("prometheus-alertmanager"), f"--config.file={config_path}",
            f"--storage.path={workdir / 'am-data'}", f"--web.listen-address={self.address}",
            "--cluster.listen-address=", "--log.level=warn",
        ], workdir, "alertmanager")
        wait_for(self._ready, timeout=30, what="Alertmanager to be ready")

