"""A real Prometheus scrapes the real exporter process in demo mode."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import ExporterProcess, Stoppable, wait_for
from tests.prom import Prometheus

pytestmark = pytest.mark.tools


def test_prometheus_scrapes_the_demo(demo_exporter: ExporterProcess, tmp_path: Path,
                                     processes: list[Stoppable]) -> None:
    prometheus = Prometheus(tmp_path, [demo_exporter.address])
    processes.append(prometheus)
    wait_for(prometheus.targets_up, timeout=30, what="the exporter target to be up")
    wait_for(lambda: prometheus.query('macie_classification_job_status{status="USER_PAUSED"} == 1'),
             timeout=30, what="the paused demo job in Prometheus")
    regions = {r["metric"]["region"] for r in prometheus.query("macie_exporter_refresh_success")}
    assert regions == {"eu-west-1", "us-east-1", "ap-southeast-2"}  # the last: Macie off
    # The exporter's labels survive Prometheus' own `job` and `instance` target labels.
    (info,) = prometheus.query('macie_classification_job_info{job_name="legal-hold-scan"}')
    assert info["metric"]["job"] == "macie-exporter"
    assert info["metric"]["account_id"] == "123456789012"
