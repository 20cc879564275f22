"""The alerting rules, their runbook and the example Alertmanager config.

promtool and amtool check the files; promtool runs the rule unit tests; and an end-to-end test
has a real Prometheus scrape the real exporter (demo mode), evaluate deploy/prometheus/alerts.yml
and notify a real Alertmanager, which delivers the pause-expiry alert to a webhook in the test.
"""

from __future__ import annotations

import json
import re
import subprocess
import threading
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import REPO, ExporterProcess, Stoppable, require_tool, wait_for
from tests.prom import Alertmanager, Prometheus

RULES = REPO / "deploy" / "prometheus" / "alerts.yml"
RULE_TESTS = REPO / "deploy" / "prometheus" / "alerts_test.yml"
RECORDING = REPO / "deploy" / "prometheus" / "rules.yml"
RECORDING_TESTS = REPO / "deploy" / "prometheus" / "rules_test.yml"
ALERTMANAGER_CONFIG = REPO / "deploy" / "alertmanager" / "alertmanager.yml"
RUNBOOK = REPO / "docs" / "runbook.md"

REQUIRED_ALERTS = {
    "MacieClassificationJobPauseExpiring",
    "MacieClassificationJobQuotaPaused",
    "MacieClassificationJobLastRunErrors",
    "MacieClassificationJobBucketErrors",
    "MacieClassificationJobNoProgress",
    "MacieClassificationJobHighSeverityFindings",
    "MacieUsageQuotaReached",
    "MacieSessionPaused",
    "MacieMemberNotEnabled",
    "MacieS3BucketPublicSensitive",
    "MacieS3BucketNotAnalyzable",
    "MacieAutomatedDiscoveryDisabled",
    "MacieS3BucketHighSeverityFindings",
    "MacieExporterRefreshFailing",
    "MacieExporterDataStale",
    "MacieExporterDiscoveryFailing",
    "MacieExporterDown",
    "MacieExporterShardsMissing",
    "MacieExporterShardingMismatch",
    "MacieExporterConfigReloadFailing",
}
# The demo account's USER_PAUSED job, four days from cancellation (exporter/demo/story.py).
PAUSED_JOB_ID = "legalhold0000000000000000000001"
PAUSED_JOB_NAME = "legal-hold-scan"


def rules_in(path: Path) -> list[dict[str, Any]]:
    """Every rule of a Prometheus rule file, in order."""
    groups = yaml.safe_load(path.read_text(encoding="utf-8"))["groups"]
    return [rule for group in groups for rule in group["rules"]]


def alerting_rules() -> list[dict[str, Any]]:
    return [rule for rule in rules_in(RULES) if "alert" in rule]


def run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False,
                          cwd=REPO)


# The alerting rules and the recording rules, each with its promtool unit tests.
RULE_FILES = pytest.mark.parametrize(("rules", "tests"), [(RULES, RULE_TESTS),
                                                          (RECORDING, RECORDING_TESTS)],
                                     ids=["alerts", "recording"])


@pytest.mark.tools
@RULE_FILES
def test_promtool_check_rules_is_clean(rules: Path, tests: Path) -> None:
    check = run(require_tool("promtool"), "check", "rules", str(rules))
    assert check.returncode == 0, check.stdout + check.stderr
    assert f"SUCCESS: {len(rules_in(rules))} rules found" in check.stdout
    assert "warning" not in (check.stdout + check.stderr).lower()


@pytest.mark.tools
@RULE_FILES
def test_promtool_rule_unit_tests_pass(rules: Path, tests: Path) -> None:
    result = run(require_tool("promtool"), "test", "rules", str(tests))
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_is_complete_and_tested_both_ways() -> None:
    rules = alerting_rules()
    assert {rule["alert"] for rule in rules} == REQUIRED_ALERTS
    anchors = {slug(line.lstrip("#")) for line in RUNBOOK.read_text(encoding="utf-8").splitlines()
               if line.startswith("## ")}
    for rule in rules:
        assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
        annotations = rule["annotations"]
        assert {"summary", "description", "runbook_url"} <= annotations.keys(), rule["alert"]
        url = annotations["runbook_url"]
        assert url.endswith(f"docs/runbook.md#{rule['alert'].lower()}"), url
        assert rule["alert"].lower() in anchors, f"no runbook section for {rule['alert']}"

    fired: set[str] = set()
    silent: set[str] = set()
    for test in yaml.safe_load(RULE_TESTS.read_text(encoding="utf-8"))["tests"]:
        for case in test.get("alert_rule_test", []):
            (fired if case["exp_alerts"] else silent).add(case["alertname"])
    assert fired == REQUIRED_ALERTS, f"never tested firing: {REQUIRED_ALERTS - fired}"
    assert silent == REQUIRED_ALERTS, f"never tested silent: {REQUIRED_ALERTS - silent}"


def test_every_threshold_is_marked_and_listed_in_the_header() -> None:
    text = RULES.read_text(encoding="utf-8")
    header = text.split("\ngroups:", 1)[0]
    for name in REQUIRED_ALERTS:
        assert re.search(rf"^#\s+{name}\b", header, re.MULTILINE), (
            f"{name} is missing from the header's list of thresholds")
    for line in text.splitlines():
        if line.strip().startswith("for:"):
            assert "# threshold:" in line, f"a `for:` without a threshold comment: {line!r}"


def slug(heading: str) -> str:
    """A Markdown heading's anchor, as GitHub makes it."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_the_bucket_errors_runbook_explains_every_documented_event_type() -> None:
    from exporter.collectors.job_errors import ACCOUNT_ERRORS, BUCKET_ERRORS

    runbook = RUNBOOK.read_text(encoding="utf-8")
    section = runbook.split("## MacieClassificationJobBucketErrors", 1)[1].split("\n## ", 1)[0]
    for event_type in (*ACCOUNT_ERRORS, *BUCKET_ERRORS):
        assert f"| `{event_type}` |" in section, event_type


def alert_states(tmp_path: Path, processes: list[Stoppable], posted: list[dict[str, Any]],
                 label: str) -> dict[tuple[str, str], str]:
    """The alerts `posted` to a real Alertmanager running the example config, once it holds
    them all: (alertname, the alert's `label`) -> active or suppressed."""
    alertmanager = Alertmanager(tmp_path, yaml.safe_load(
        ALERTMANAGER_CONFIG.read_text(encoding="utf-8")))
    processes.append(alertmanager)
    request = urllib.request.Request(f"{alertmanager.url}/api/v2/alerts", method="POST",
                                     data=json.dumps(posted).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10):
        pass

    def states() -> dict[tuple[str, str], str]:
        with urllib.request.urlopen(f"{alertmanager.url}/api/v2/alerts", timeout=10) as answer:
            found = json.loads(answer.read())
        return {(a["labels"]["alertname"], a["labels"][label]): a["status"]["state"]
                for a in found}

    wait_for(lambda: len(states()) == len(posted), what=f"the {len(posted)} alerts")
    return states()


@pytest.mark.tools
def test_bucket_errors_mute_the_last_run_errors_of_the_same_job(
        tmp_path: Path, processes: list[Stoppable]) -> None:
    """The example config's inhibit rule, applied by a real Alertmanager."""
    def alert(name: str, job_id: str) -> dict[str, Any]:
        return {"labels": {"alertname": name, "severity": "warning", "job_id": job_id,
                           "account_id": "111122223333", "region": "eu-west-1"}}

    posted = [alert("MacieClassificationJobLastRunErrors", "weekly"),
              alert("MacieClassificationJobBucketErrors", "weekly"),
              alert("MacieClassificationJobLastRunErrors", "unparsed-only")]
    assert alert_states(tmp_path, processes, posted, "job_id") == {
        ("MacieClassificationJobLastRunErrors", "weekly"): "suppressed",
        ("MacieClassificationJobBucketErrors", "weekly"): "active",
        ("MacieClassificationJobLastRunErrors", "unparsed-only"): "active"}


@pytest.mark.tools
def test_an_exporter_down_mutes_the_shards_missing_of_its_job(
        tmp_path: Path, processes: list[Stoppable]) -> None:
    """A shard that is down is reported once, as down; another job's missing shard is not
    muted."""
    posted = [{"labels": {"alertname": "MacieExporterDown", "severity": "critical",
                          "job": "macie-exporter", "instance": "macie-exporter-1:9729"}},
              {"labels": {"alertname": "MacieExporterShardsMissing", "severity": "critical",
                          "job": "macie-exporter"}},
              {"labels": {"alertname": "MacieExporterShardsMissing", "severity": "critical",
                          "job": "macie-exporter-eu"}}]
    assert alert_states(tmp_path, processes, posted, "job") == {
        ("MacieExporterDown", "macie-exporter"): "active",
        ("MacieExporterShardsMissing", "macie-exporter"): "suppressed",
        ("MacieExporterShardsMissing", "macie-exporter-eu"): "active"}


def test_pause_expiring_description_uses_humanized_time_left() -> None:
    for rule in alerting_rules():
        if rule["alert"] == "MacieClassificationJobPauseExpiring":
            assert "$value | humanizeDuration" in rule["annotations"]["description"]


@pytest.mark.tools
def test_example_alertmanager_config_is_valid_and_routes_by_severity() -> None:
    amtool = require_tool("amtool")
    check = run(amtool, "check-config", str(ALERTMANAGER_CONFIG))
    assert check.returncode == 0, check.stdout + check.stderr
    for severity, receiver in (("critical", "macie-pager"), ("warning", "macie-tickets")):
        route = run(amtool, "config", "routes", "test", f"--config.file={ALERTMANAGER_CONFIG}",
                    f"--verify.receivers={receiver}", f"severity={severity}",
                    "alertname=MacieClassificationJobPauseExpiring")
        assert route.returncode == 0, route.stdout + route.stderr


class Webhook:
    """An HTTP server on loopback that keeps every JSON body POSTed to it, with its path."""

    def __init__(self) -> None:
        self.received: list[tuple[str, dict[str, Any]]] = []
        lock = threading.Lock()
        received = self.received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with lock:
                    received.append((self.path, json.loads(body)))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True,
                                        kwargs={"poll_interval": 0.1})
        self._thread.start()

    def alerts(self) -> Iterator[tuple[str, dict[str, Any]]]:
        """(receiver path, alert) for every alert in every notification so far."""
        for path, notification in list(self.received):
            for alert in notification["alerts"]:
                yield path, alert

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


@pytest.fixture
def webhook(processes: list[Stoppable]) -> Webhook:
    receiver = Webhook()
    processes.append(receiver)
    return receiver


@pytest.mark.tools
def test_pause_expiry_alert_reaches_the_webhook(
    demo_exporter: ExporterProcess, webhook: Webhook, tmp_path: Path,
    processes: list[Stoppable],
) -> None:
    # The example config as shipped, except that every receiver posts to this test's webhook
    # (at /<receiver name>, to check the routing) and the first notification of a group leaves
    # after 1s instead of 30s.
    config = yaml.safe_load(ALERTMANAGER_CONFIG.read_text(encoding="utf-8"))
    config["route"].update(group_wait="1s", group_interval="1s")
    for receiver in config["receivers"]:
        for webhook_config in receiver["webhook_configs"]:
            webhook_config["url"] = f"{webhook.url}/{receiver['name']}"
    alertmanager = Alertmanager(tmp_path, config)
    processes.append(alertmanager)
    prometheus = Prometheus(tmp_path, [demo_exporter.address], rule_files=[RULES],
                            alertmanager=alertmanager.address)
    processes.append(prometheus)

    found: list[tuple[str, dict[str, Any]]] = []

    def delivered() -> bool:
        alertmanager.check_alive()
        prometheus.check_alive()
        found[:] = [(path, alert) for path, alert in webhook.alerts()
                    if alert["labels"]["alertname"] == "MacieClassificationJobPauseExpiring"
                    and alert["status"] == "firing"]
        return bool(found)

    wait_for(delivered, timeout=60, what="the pause-expiry alert at the webhook")
    path, alert = found[0]
    labels = alert["labels"]
    assert labels["job_id"] == PAUSED_JOB_ID
    assert labels["job_name"] == PAUSED_JOB_NAME
    assert labels["account_id"] == "123456789012"
    assert labels["region"] == "eu-west-1"
    assert labels["severity"] == "warning"
    assert path == "/macie-tickets"  # warnings are routed to the ticket receiver
    assert re.search(r"Macie cancels it in 3d 23h \d+m \d+s unless it is resumed",
                     alert["annotations"]["description"]), alert["annotations"]
    assert alert["annotations"]["runbook_url"].endswith("#macieclassificationjobpauseexpiring")

    # The demo account has reached its sensitive data discovery quota in eu-west-1 (why its
    # bulk-backup-scan is PAUSED), and that alert has no `for:`. Nothing else fires: the
    # quota-paused and erroring jobs (their last-run and bucket errors), the suspended and
    # removed members are still within their `for:` period, the paused job is more than a day
    # from cancellation, and the High findings Prometheus has seen have not risen yet. The
    # demo's public bucket with a sensitive score fires at once too, as the critical alert it
    # is.
    expected = {
        ("MacieS3BucketPublicSensitive", "critical", "123456789012", "eu-west-1",
         "acme-marketing-public"),
        ("MacieClassificationJobPauseExpiring", "warning", "123456789012", "eu-west-1",
         PAUSED_JOB_ID),
        ("MacieUsageQuotaReached", "warning", "123456789012", "eu-west-1",
         "SENSITIVE_DATA_DISCOVERY"),
    }
    firing: set[tuple[str, ...]] = set()

    def settled() -> bool:
        firing.clear()
        for alert in prometheus.alerts():
            if alert["state"] == "firing":
                labels = alert["labels"]
                firing.add((labels["alertname"], labels["severity"],
                            labels.get("account_id", ""), labels.get("region", ""),
                            labels.get("job_id") or labels.get("usage_type")
                            or labels.get("bucket", "")))
        return expected <= firing

    wait_for(settled, timeout=30, what=f"the alerts {sorted(expected)}")
    assert firing == expected
