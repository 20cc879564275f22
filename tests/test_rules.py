"""The recording rules: promtool checks them and runs their unit tests; every rule is named
level:metric:operations over a metric the exporter exports, and each one is tested."""

from __future__ import annotations

import re
from typing import Any

import yaml

from tests.conftest import FIXTURES, REPO
from tests.test_alerts import RECORDING, RECORDING_TESTS, rules_in

# promtool checks these with the alerts (tests/test_alerts.py).
RULES, RULE_TESTS = RECORDING, RECORDING_TESTS
DASHBOARD = REPO / "grafana" / "macie-classification-jobs.json"
LEVELS = {"account_region": ("account_id", "region"), "account": ("account_id",),
          "region": ("region",)}


def recording_rules() -> list[dict[str, Any]]:
    return rules_in(RULES)


def test_rules_are_named_level_metric_operation_over_exported_metrics() -> None:
    golden = (FIXTURES / "golden.prom").read_text(encoding="utf-8")
    exported = set(re.findall(r"^# TYPE (\S+) ", golden, re.MULTILINE))
    rules = recording_rules()
    assert rules and all("alert" not in rule for rule in rules)
    for rule in rules:
        level, metric, operation = rule["record"].split(":")
        assert metric in exported, rule["record"]
        match = re.fullmatch(rf"(\w+) by \(([\w, ]+)\) \({metric}\)", rule["expr"].strip())
        assert match, rule["expr"]
        assert match.group(1) == operation, rule["record"]
        by = [label.strip() for label in match.group(2).split(",")]
        # The level's labels first, then at most the one label counted by.
        assert tuple(by[:len(LEVELS[level])]) == LEVELS[level], rule["record"]
        assert len(by) <= len(LEVELS[level]) + 1, rule["record"]
    assert {rule["record"] for rule in rules} >= {
        "account_region:macie_classification_jobs:sum",
        "account_region:macie_classification_job_findings:sum",
        "account_region:macie_usage_estimated_cost:sum",
        "account:macie_exporter_refresh_success:min"}


def test_every_rule_has_a_unit_test() -> None:
    tested = {case["expr"] for test in yaml.safe_load(RULE_TESTS.read_text(encoding="utf-8"))
              ["tests"] for case in test["promql_expr_test"]}
    assert tested == {rule["record"] for rule in recording_rules()}


def test_the_dashboard_does_not_depend_on_them() -> None:
    dashboard = DASHBOARD.read_text(encoding="utf-8")
    for rule in recording_rules():
        assert rule["record"] not in dashboard
    assert not re.search(r"\b[a-z_]+:macie_\w+:\w+", dashboard)
