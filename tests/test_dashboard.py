"""The Grafana dashboard: generated as code, its queries proven against a real Prometheus
scraping the demo exporter, and its JSON type-checked against @grafana/schema."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from grafana.dashboard import OUTPUT, UID, render
from tests.conftest import REPO, ExporterProcess, Stoppable, require_tool, wait_for
from tests.prom import Prometheus

SCHEMA_CHECK = REPO / "grafana" / "schema-check"
PROVISIONING = REPO / "grafana" / "provisioning"
DASHBOARD: dict[str, Any] = json.loads(OUTPUT.read_text(encoding="utf-8"))

# Panels that the demo account legitimately leaves empty, with the reason. (None today: the
# demo has running, scheduled, user-paused, quota-paused and erroring jobs, with the log events
# that say why; jobs with High
# findings; an account at its quota; a Macie administrator with Enabled, Paused and Removed
# members; and Macie ENABLED and DISABLED.)
EMPTY_IN_DEMO: dict[str, str] = {}

# Grafana's built-in interval variables, as Grafana would set them for a 1s scrape interval.
BUILTINS = {"$__rate_interval": "10s", "$__interval": "1s", "$__range": "5m"}


def grafana_regex(values: list[str]) -> str:
    """A multi-value selection as Grafana's Prometheus data source writes it into a regex."""
    escaped = [re.sub(r"([\\$^*{}\[\]'+?.()|])", r"\\\\\1", value) for value in values]
    return "(" + "|".join(escaped) + ")"


SELECTIONS = {
    "All": {"account": ".*", "region": ".*", "job": ".*"},
    "picked": {
        "account": grafana_regex(["123456789012"]),
        "region": grafana_regex(["eu-west-1", "us-east-1"]),
        # One job of each kind the panels need, and a name with regex metacharacters.
        "job": grafana_regex([
            "pii-scan-prod-data-lake", "daily-customer-uploads", "legal-hold-scan",
            "bulk-backup-scan", "weekly-finance-archive", "Test run (aborted)",
        ]),
    },
}


def substitute(expr: str, selection: dict[str, str]) -> str:
    for name, value in {**BUILTINS, **{f"${k}": v for k, v in selection.items()}}.items():
        expr = expr.replace(name, value)
    assert "$" not in expr, f"an unknown variable is left in {expr!r}"
    return expr


def panels() -> Iterator[dict[str, Any]]:
    for panel in DASHBOARD["panels"]:
        if panel["type"] != "row":
            yield panel


def variables() -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in DASHBOARD["templating"]["list"]}


# ---------------------------------------------------------------- generated as code


def test_the_committed_json_is_what_the_generator_writes() -> None:
    assert OUTPUT.read_text(encoding="utf-8") == render(), (
        "the committed dashboard is stale: run `python -m grafana.dashboard --write`")


def test_dashboard_is_importable_anywhere() -> None:
    assert DASHBOARD["uid"] == UID
    assert DASHBOARD["schemaVersion"] >= 39
    assert "id" not in DASHBOARD  # a fixed id would clash on import
    found = variables()
    assert list(found) == ["datasource", "account", "region", "job"]
    assert found["datasource"]["type"] == "datasource"
    assert found["datasource"]["query"] == "prometheus"
    for name in ("account", "region", "job"):
        assert found[name]["multi"] and found[name]["includeAll"], name
        assert found[name]["allValue"] == ".*", name
    ids = [panel["id"] for panel in DASHBOARD["panels"]]
    assert len(ids) == len(set(ids))
    for panel in panels():
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]


def test_the_issue_s_panels_are_there() -> None:
    titles = {panel["title"] for panel in DASHBOARD["panels"]}
    assert {
        "Jobs", "Running", "Paused by a user", "Paused by Macie (quota)", "Last run had errors",
        "Jobs by status and type", "Classification jobs", "Objects to process: running jobs",
        "Runs: scheduled jobs", "Time left before Macie cancels USER_PAUSED jobs",
        "Refresh success per target", "Data age", "Refresh duration", "API requests by outcome",
        # Findings, usage and quota, organisation (issue #14).
        "Findings per job by severity", "Jobs with the most High findings",
        "Estimated cost this month", "Quotas: who is at a quota?", "Members by status",
        "Member accounts", "Macie status per account and region",
        # S3 buckets and automated discovery (issue #20).
        "Exposed buckets per account", "Buckets by sensitivity",
        "Riskiest buckets: public or shared, by sensitivity", "Buckets Macie cannot analyse",
        "Buckets monitored by nothing", "Automated discovery per account",
        "Age of each bucket's last analysis",
        # Why runs failed, from the job log events (issue #21).
        "Why the last runs had errors",
    } <= titles
    rows = [panel["title"].split(":")[0] for panel in DASHBOARD["panels"] if panel["type"] == "row"]
    assert rows == ["Overview", "Jobs", "Progress", "Pause expiry", "Findings", "S3 buckets",
                    "Automated discovery", "Usage and quota", "Organisation", "Exporter health"]
    (jobs,) = [p for p in DASHBOARD["panels"] if p["title"] == "Classification jobs"]
    organize = next(t for t in jobs["transformations"] if t["id"] == "organize")["options"]
    shown = [name for name in organize["renameByName"].values()]
    assert shown[:9] == ["Job", "Status", "Type", "Schedule", "Runs", "Objects to process",
                         "Last run", "Pause expires in", "Last run errors"]
    (expiry,) = [p for p in DASHBOARD["panels"] if p["title"].startswith("Time left")]
    steps = expiry["fieldConfig"]["defaults"]["thresholds"]["steps"]
    assert steps[0] == {"value": None, "color": "red"} and steps[1]["value"] == 86400


def test_provisioning_loads_the_dashboard_from_a_file() -> None:
    (datasource,) = yaml.safe_load(
        (PROVISIONING / "datasources" / "prometheus.yaml").read_text(encoding="utf-8"),
    )["datasources"]
    assert datasource["type"] == "prometheus" and datasource["isDefault"] is True
    (provider,) = yaml.safe_load(
        (PROVISIONING / "dashboards" / "macie-exporter.yaml").read_text(encoding="utf-8"),
    )["providers"]
    assert provider["type"] == "file" and provider["options"]["path"].startswith("/")


# ---------------------------------------------------------------- against a real Prometheus


@pytest.fixture
def prometheus(demo_exporter: ExporterProcess, tmp_path: Path,
               processes: list[Stoppable]) -> Prometheus:
    server = Prometheus(tmp_path, [demo_exporter.address])
    processes.append(server)
    wait_for(server.targets_up, timeout=30, what="the exporter target to be up")
    # Enough samples for rate() over $__rate_interval, and every demo region refreshed.
    wait_for(lambda: len(server.query(
        "sum by (region) (rate(macie_exporter_api_requests_total[10s]))")) == 3,
        timeout=30, what="three regions' API request rates")
    return server


@pytest.mark.tools
def test_every_panel_query_runs_and_fills_its_panel(prometheus: Prometheus) -> None:
    assert set(EMPTY_IN_DEMO) <= {panel["title"] for panel in panels()}
    for selection_name, selection in SELECTIONS.items():
        empty: set[str] = set()
        for panel in panels():
            for target in panel["targets"]:
                expr = substitute(target["expr"], selection)
                prometheus.query(expr)  # a query error fails here, not after a wait

                def filled(expr: str = expr) -> bool:
                    return bool(prometheus.query(expr))

                if panel["title"] in EMPTY_IN_DEMO:
                    continue
                try:
                    wait_for(filled, timeout=10, what=f"data for {panel['title']!r}")
                except AssertionError:
                    empty.add(f"{panel['title']} [{target['refId']}]: {expr}")
        assert not empty, f"panels without data ({selection_name}):\n" + "\n".join(sorted(empty))
    # Grafana's escaping of the picked names selects exactly those jobs.
    (jobs,) = [panel for panel in panels() if panel["title"] == "Jobs"]
    (count,) = prometheus.query(substitute(jobs["targets"][0]["expr"], SELECTIONS["picked"]))
    assert count["value"][1] == "6"


def panel(title: str) -> dict[str, Any]:
    (found,) = [p for p in panels() if p["title"] == title]
    return found


def instant(prometheus: Prometheus, title: str, ref: str = "A",
            until: Callable[[list[dict[str, Any]]], bool] = bool) -> list[dict[str, Any]]:
    """The series a panel's query returns for the whole demo (every variable at All), once
    `until` holds of them (the collectors' first rounds reach /metrics one render at a time)."""
    (target,) = [t for t in panel(title)["targets"] if t["refId"] == ref]
    expr = substitute(target["expr"], SELECTIONS["All"])
    found: list[list[dict[str, Any]]] = []

    def ready() -> bool:
        found[:] = [prometheus.query(expr)]
        return until(found[0])

    wait_for(ready, timeout=30, what=f"data for {title!r}")
    return found[0]


def _job_names(*names: str) -> Callable[[list[dict[str, Any]]], bool]:
    return lambda series: set(names) <= {s["metric"]["job_name"] for s in series}


@pytest.mark.tools
def test_the_findings_usage_and_organisation_rows_tell_the_demo_s_story(
    prometheus: Prometheus,
) -> None:
    # The jobs with the most High findings: the running data-lake scan and the paused legal-hold
    # scan are among them, and only jobs with High findings are listed.
    top = {s["metric"]["job_name"]: float(s["value"][1])
           for s in instant(prometheus, "Jobs with the most High findings",
                            until=_job_names("pii-scan-prod-data-lake", "legal-hold-scan"))}
    assert all(count > 0 for count in top.values()) and len(top) <= 10, top
    instant(prometheus, "Findings per job by severity", "C", until=_job_names(
        "pii-scan-prod-data-lake", "daily-customer-uploads", "us-baseline"))
    # The demo account is at its sensitive data discovery quota in eu-west-1, not in us-east-1.
    quota = {(s["metric"]["account_id"], s["metric"]["region"], s["metric"]["usage_type"]):
             s["value"][1] for s in instant(prometheus, "Quotas: who is at a quota?",
                                            until=lambda found: len(found) >= 2)}
    assert quota[("123456789012", "eu-west-1", "SENSITIVE_DATA_DISCOVERY")] == "1"
    assert quota[("123456789012", "us-east-1", "SENSITIVE_DATA_DISCOVERY")] == "0"
    costs = {(s["metric"]["account_id"], s["metric"]["usage_type"])
             for s in instant(prometheus, "Estimated cost this month")}
    assert ("123456789012", "SENSITIVE_DATA_DISCOVERY") in costs
    # Members of the administrator 123456789012 in eu-west-1: Enabled, one Paused, one Removed.
    by_status = {s["metric"]["status"]: s["value"][1]
                 for s in instant(prometheus, "Members by status",
                                  until=lambda found: len(found) >= 3)}
    assert by_status["Paused"] == "1" and by_status["Removed"] == "1", by_status
    assert int(by_status["Enabled"]) >= 1, by_status
    analysed = {s["metric"]["member_account_id"]: s["value"][1]
                for s in instant(prometheus, "Member accounts", "B")}
    assert sorted(analysed.values()).count("0") == 2, analysed
    # Macie's status as the state timeline's codes: ENABLED (1) in eu-west-1 and us-east-1,
    # DISABLED (3) in ap-southeast-2.
    mapping = panel("Macie status per account and region")["fieldConfig"]["defaults"]["mappings"]
    texts = {code: option["text"] for code, option in mapping[0]["options"].items()}
    status = {(s["metric"]["account_id"], s["metric"]["region"]): texts[s["value"][1]]
              for s in instant(prometheus, "Macie status per account and region",
                               until=lambda found: len(found) >= 3)}
    assert status[("123456789012", "eu-west-1")] == "ENABLED"
    assert status[("123456789012", "us-east-1")] == "ENABLED"
    assert status[("123456789012", "ap-southeast-2")] == "DISABLED"


@pytest.mark.tools
def test_the_jobs_row_says_why_the_demo_s_runs_failed(prometheus: Prometheus) -> None:
    (errors,) = [p for p in panels() if p["title"] == "Why the last runs had errors"]
    rows = [p["title"] for p in DASHBOARD["panels"]]
    assert rows.index("Classification jobs") < rows.index("Why the last runs had errors") < (
        rows.index("Progress: are running jobs moving, and are schedules running?"))
    assert errors["gridPos"]["w"] == 24
    found = {(s["metric"]["job_name"], s["metric"]["event_type"],
              s["metric"]["affected_resource"]): s["value"][1]
             for s in instant(prometheus, "Why the last runs had errors")}
    assert {key: count for key, count in found.items()
            if key[0] == "weekly-finance-archive"} == {
        ("weekly-finance-archive", "BUCKET_ACCESS_DENIED", "finance-ledgers-eu"): "1",
        ("weekly-finance-archive", "BUCKET_ACCESS_DENIED", "finance-payroll-archive"): "1",
        ("weekly-finance-archive", "BUCKET_DOES_NOT_EXIST", "finance-scratch-2023"): "1"}
    organize = next(t for t in errors["transformations"] if t["id"] == "organize")["options"]
    assert list(organize["renameByName"].values())[:4] == [
        "Job", "Event type", "Bucket or account", "Events"]


@pytest.mark.tools
def test_every_variable_query_finds_the_demo_s_values(prometheus: Prometheus) -> None:
    expected = {"account": {"123456789012"},
                "region": {"eu-west-1", "us-east-1", "ap-southeast-2"},
                "job": {"legal-hold-scan", "bulk-backup-scan", "Test run (aborted)"}}
    for name, variable in variables().items():
        if variable["type"] != "query":
            continue
        match = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", variable["query"])
        assert match, f"{name}: {variable['query']!r} is not label_values(selector, label)"
        selector, label = substitute(match.group(1), SELECTIONS["All"]), match.group(2)
        values = {series["metric"][label] for series in prometheus.query(selector)}
        assert expected[name] <= values, f"{name}: {sorted(values)}"


# ---------------------------------------------------------------- Grafana's schema


def schema_check(dashboard: Path | None = None) -> subprocess.CompletedProcess[str]:
    """generate.mjs then tsc --noEmit in grafana/schema-check (see its package.json)."""
    node = require_tool("node")
    tsc = SCHEMA_CHECK / "node_modules" / "typescript" / "bin" / "tsc"
    if not tsc.exists():
        pytest.fail("grafana/schema-check has no node_modules: run "
                    "`(cd grafana/schema-check && npm ci)` (scripts/test.sh does)")
    generate = [node, "generate.mjs", *([str(dashboard)] if dashboard else [])]
    subprocess.run(generate, cwd=SCHEMA_CHECK, check=True, timeout=60)
    return subprocess.run([node, str(tsc), "--noEmit", "--pretty", "false"], cwd=SCHEMA_CHECK,
                          capture_output=True, text=True, timeout=180)


@pytest.mark.tools
def test_the_json_type_checks_against_grafana_schema() -> None:
    result = schema_check()
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(("breakage", "error"), [
    ("misspelt field", "'\"refreshh\"' does not exist"),
    ("wrong type", "not assignable to type 'number'"),
    ("unknown enum value", "'\"absolut\"' is not assignable"),
    ("bad table cell option", "'\"colour-background\"'"),
])
@pytest.mark.tools
def test_the_schema_check_rejects_a_broken_dashboard(tmp_path: Path, breakage: str,
                                                      error: str) -> None:
    broken: dict[str, Any] = json.loads(OUTPUT.read_text(encoding="utf-8"))
    stat = next(p for p in broken["panels"] if p["type"] == "stat")
    table = next(p for p in broken["panels"] if p["type"] == "table")
    if breakage == "misspelt field":
        broken["refreshh"] = "1m"
    elif breakage == "wrong type":
        stat["gridPos"]["h"] = "tall"
    elif breakage == "unknown enum value":
        stat["fieldConfig"]["defaults"]["thresholds"]["mode"] = "absolut"
    else:
        cell = next(prop for override in table["fieldConfig"]["overrides"]
                    for prop in override["properties"] if prop["id"] == "custom.cellOptions")
        cell["value"]["type"] = "colour-background"
    path = tmp_path / "broken.json"
    path.write_text(json.dumps(broken), encoding="utf-8")
    try:
        result = schema_check(path)
    finally:
        schema_check()  # leave generated/ describing the committed dashboard
    assert result.returncode != 0, f"tsc accepted a dashboard with a {breakage}"
    assert error in result.stdout, result.stdout
