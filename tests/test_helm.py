"""The Helm chart, rendered and linted by Helm's own engine (helm-python-sdk embeds its Go SDK).

Core objects are validated with kubernetes-validate --strict; the ServiceMonitor and the
PrometheusRule against the prometheus-operator models; the PrometheusRule's rules and the
dashboard ConfigMap against deploy/prometheus/alerts.yml and grafana/ (their single sources).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import bcrypt
import helm_python as helm
import kubernetes_validate
import pytest
import yaml
from cloudcoil.models.prometheus_operator import v1 as monitoring
from kubernetes_validate import utils as kv_utils

from exporter import __version__
from exporter import config as exporter_config
from exporter.server import OPEN_PATHS
from exporter.webconfig import load_web_config
from tests.conftest import REPO

pytestmark = pytest.mark.tools

CHART = REPO / "deploy" / "helm" / "macie-exporter"
ALERTS = REPO / "deploy" / "prometheus" / "alerts.yml"
DASHBOARD = REPO / "grafana" / "macie-classification-jobs.json"
ROLE_ARN = "arn:aws:iam::123456789012:role/macie-exporter"
WEB_CONFIG_FILE = "/etc/macie-exporter/web/web-config.yml"

# Every option on: what a kube-prometheus-stack user with IRSA, a config file and TLS would set.
ALL_ON: dict[str, Any] = {
    "image": {"tag": "0.1.0", "pullPolicy": "Always"},
    "imagePullSecrets": [{"name": "registry"}],
    "serviceAccount": {"annotations": {"eks.amazonaws.com/role-arn": ROLE_ARN},
                       "labels": {"team": "security"}},
    "extraArgs": ["--log.format=json", "--refresh.interval=2m"],
    "env": [{"name": "AWS_STS_REGIONAL_ENDPOINTS", "value": "regional"}],
    "envFrom": [{"configMapRef": {"name": "aws-settings", "optional": True}}],
    "config": {
        "aws": {"regions": ["eu-west-1", "us-east-1"], "retry_mode": "adaptive"},
        "jobs": {"tag_labels": ["team"], "terminal_max_age": "30d"},
        "targets": [{"regions": ["eu-central-1"]},
                    {"role_arn": "arn:aws:iam::210987654321:role/macie-exporter",
                     "external_id": "my-external-id"}],
        "filters": {"excludes": [{"key": "name", "comparator": "STARTS_WITH",
                                  "values": ["tmp-"]}]},
    },
    "webConfig": {"enabled": True, "scheme": "HTTPS",
                  "config": {"tls_server_config": {"cert_file": "/tls/tls.crt",
                                                   "key_file": "/tls/tls.key"}}},
    "service": {"type": "ClusterIP", "port": 9729, "annotations": {"a": "b"},
                "labels": {"c": "d"}},
    "podAnnotations": {"example.com/owner": "security"},
    "podLabels": {"team": "security"},
    "priorityClassName": "monitoring",
    "nodeSelector": {"kubernetes.io/os": "linux"},
    "tolerations": [{"key": "monitoring", "operator": "Exists", "effect": "NoSchedule"}],
    "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [{"matchExpressions": [
            {"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64", "arm64"]}]}]}}},
    "extraVolumes": [{"name": "tls", "secret": {"secretName": "macie-exporter-tls"}}],
    "extraVolumeMounts": [{"name": "tls", "mountPath": "/tls", "readOnly": True}],
    "serviceMonitor": {"enabled": True, "labels": {"release": "kube-prometheus-stack"},
                       "interval": "2m", "scrapeTimeout": "30s",
                       "tlsConfig": {"insecureSkipVerify": True},
                       "basicAuth": {"username": {"name": "macie-scrape", "key": "username"},
                                     "password": {"name": "macie-scrape", "key": "password"}},
                       "relabelings": [{"action": "replace", "targetLabel": "cluster",
                                        "replacement": "prod"}],
                       "metricRelabelings": [{"action": "drop", "sourceLabels": ["__name__"],
                                              "regex": "macie_classification_job_tags"}]},
    "prometheusRule": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}},
    "grafanaDashboard": {"enabled": True, "namespace": "grafana",
                         "annotations": {"grafana_folder": "Amazon Macie"}},
}

BAD_VALUES = [
    ({"replicaCount": 3}, "additional properties 'replicaCount' not allowed"),
    ({"service": {"port": "http"}}, "/service/port"),
    ({"service": {"port": 70000}}, "/service/port"),
    ({"image": {"pullPolicy": "Sometimes"}}, "/image/pullPolicy"),
    ({"webConfig": {"scheme": "FTP"}}, "/webConfig/scheme"),
    ({"serviceMonitor": {"interval": "every minute"}}, "/serviceMonitor/interval"),
    ({"extraArgs": ["aws.regions=eu-west-1"]}, "/extraArgs/0"),
    ({"serviceAccount": {"annotations": {"eks.amazonaws.com/role-arn": 12}}},
     "/serviceAccount/annotations"),
]


def render(values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """The chart's objects; a template switched off by `if` renders blank and is skipped."""
    chart = helm.Chart.load(CHART)
    manifests = chart.render(values or {}, name="macie", namespace="monitoring",
                             is_install=True)
    objects: list[dict[str, Any]] = []
    for path, text in sorted(manifests.items()):
        if path.endswith("NOTES.txt"):
            continue
        objects.extend(doc for doc in yaml.safe_load_all(text) if doc)
    return objects


def one(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [obj for obj in objects if obj["kind"] == kind]
    assert len(found) == 1, f"{len(found)} objects of kind {kind}"
    return found[0]


def container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    containers = one(objects, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return dict(containers[0])


def test_chart_metadata_matches_the_exporter() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text(encoding="utf-8"))
    assert chart["apiVersion"] == "v2"
    assert chart["appVersion"] == __version__
    assert helm.Chart.load(CHART).name == "macie-exporter"


@pytest.mark.parametrize("values", [{}, ALL_ON], ids=["defaults", "all-on"])
def test_lint_strict_is_clean(values: dict[str, Any]) -> None:
    report = helm.lint(CHART, values, strict=True, namespace="monitoring")
    assert report["total_charts_linted"] == 1
    assert report["errors"] == []
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert problems == []


def test_defaults_render_only_the_core_objects() -> None:
    objects = render()
    assert sorted(obj["kind"] for obj in objects) == ["Deployment", "Service", "ServiceAccount"]


def test_all_on_renders_every_object() -> None:
    kinds = sorted(obj["kind"] for obj in render(ALL_ON))
    assert kinds == ["ConfigMap", "ConfigMap", "Deployment", "PrometheusRule", "Secret",
                     "Service", "ServiceAccount", "ServiceMonitor"]


@pytest.mark.parametrize(("values", "message"), BAD_VALUES,
                         ids=[str(bad) for bad, _ in BAD_VALUES])
def test_schema_rejects_bad_values(values: dict[str, Any], message: str) -> None:
    chart = helm.Chart.load(CHART)
    with pytest.raises(helm.HelmValuesError, match=re.escape(message)):
        chart.validate_schema(values)
    with pytest.raises(helm.HelmError):
        chart.render(values, name="macie", namespace="monitoring")
    report = helm.lint(CHART, values, strict=True)
    assert any(message in error for error in report["errors"]), report


def test_schema_accepts_the_documented_values() -> None:
    chart = helm.Chart.load(CHART)
    chart.validate_schema({})
    chart.validate_schema(ALL_ON)


def current_kubernetes() -> str:
    version = str(kv_utils.latest_version())
    major, minor = (int(part) for part in version.split(".")[:2])
    assert (major, minor) >= (1, 33), f"kubernetes-validate knows only up to {version}"
    return version


@pytest.mark.parametrize("values", [{}, ALL_ON], ids=["defaults", "all-on"])
def test_core_objects_pass_kubernetes_validate_strict(values: dict[str, Any]) -> None:
    version = current_kubernetes()
    core = [obj for obj in render(values) if not obj["apiVersion"].startswith("monitoring.")]
    assert core
    for obj in core:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as err:
            pytest.fail(f"{obj['kind']} {obj['metadata']['name']} (Kubernetes {version}): "
                        f"{err.message} at {'.'.join(str(p) for p in err.path)}")


def without_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [without_nulls(v) for v in value]
    return value


@pytest.mark.parametrize("kind", ["ServiceMonitor", "PrometheusRule"])
def test_operator_objects_validate_against_prometheus_operator_models(kind: str) -> None:
    obj = one(render(ALL_ON), kind)
    parsed: monitoring.ServiceMonitor | monitoring.PrometheusRule
    if kind == "ServiceMonitor":
        parsed = monitoring.ServiceMonitor.model_validate(obj)
    else:
        parsed = monitoring.PrometheusRule.model_validate(obj)
    # The models ignore unknown fields; a field the operator does not know would be lost here.
    dumped = without_nulls(parsed.model_dump(mode="json", by_alias=True, exclude_unset=True))
    assert dumped == obj


def test_prometheus_rule_holds_exactly_the_alerts_file() -> None:
    # The chart carries a copy (Helm's .Files cannot reach outside the chart directory).
    assert (CHART / "files" / "alerts.yml").read_bytes() == ALERTS.read_bytes(), (
        f"run: cp {ALERTS.relative_to(REPO)} {CHART.relative_to(REPO)}/files/alerts.yml")
    rule = one(render(ALL_ON), "PrometheusRule")
    assert rule["spec"]["groups"] == yaml.safe_load(ALERTS.read_text(encoding="utf-8"))["groups"]
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"


def test_dashboard_configmap_holds_exactly_the_dashboard() -> None:
    copy = CHART / "files" / "macie-classification-jobs.json"
    assert copy.read_bytes() == DASHBOARD.read_bytes(), (
        f"run: cp {DASHBOARD.relative_to(REPO)} {copy.relative_to(REPO)}")
    dashboards = [obj for obj in render(ALL_ON)
                  if obj["kind"] == "ConfigMap" and obj["metadata"]["name"].endswith("-dashboard")]
    assert len(dashboards) == 1
    configmap = dashboards[0]
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert configmap["metadata"]["namespace"] == "grafana"
    assert configmap["metadata"]["annotations"] == {"grafana_folder": "Amazon Macie"}
    (data,) = configmap["data"].values()
    assert json.loads(data) == json.loads(DASHBOARD.read_text(encoding="utf-8"))


def test_deployment_is_one_hardened_replica_with_probes() -> None:
    objects = render()
    deployment = one(objects, "Deployment")
    assert deployment["spec"]["replicas"] == 1
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    main = container(objects)
    security = main["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    assert main["resources"]["requests"] and main["resources"]["limits"]["memory"]
    assert main["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert main["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert main["ports"] == [{"name": "http", "containerPort": 9729, "protocol": "TCP"}]
    assert main["image"] == f"ghcr.io/macie-exporter/macie-exporter:{__version__}"
    service = one(objects, "Service")
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]


def test_irsa_annotation_lands_on_the_service_account_the_pod_uses() -> None:
    objects = render(ALL_ON)
    account = one(objects, "ServiceAccount")
    assert account["metadata"]["annotations"] == {"eks.amazonaws.com/role-arn": ROLE_ARN}
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == account["metadata"]["name"]


def test_config_file_is_mounted_and_accepted_by_the_exporter(tmp_path: Path) -> None:
    objects = render(ALL_ON)
    configmaps = [obj for obj in objects if obj["kind"] == "ConfigMap"
                  and not obj["metadata"]["name"].endswith("-dashboard")]
    assert len(configmaps) == 1
    text = configmaps[0]["data"]["config.yml"]
    assert yaml.safe_load(text) == ALL_ON["config"]
    main = container(objects)
    mount = next(m for m in main["volumeMounts"] if m["name"] == "config")
    assert f"--config.file={mount['mountPath']}" in main["args"]

    # The exporter's own parser takes the rendered flags and file.
    (tmp_path / "config.yml").write_text(text, encoding="utf-8")
    (tmp_path / "web-config.yml").write_text("{}\n", encoding="utf-8")
    args = [arg.replace(mount["mountPath"], str(tmp_path / "config.yml"))
               .replace(WEB_CONFIG_FILE, str(tmp_path / "web-config.yml")) for arg in main["args"]]
    parsed = exporter_config.load(args, {})
    assert len(parsed.targets) == 3
    assert parsed.log_format == "json"
    assert parsed.web_config_file == str(tmp_path / "web-config.yml")


def test_web_config_secret_is_accepted_by_the_exporter(tmp_path: Path) -> None:
    users = {"prometheus": bcrypt.hashpw(b"secret", bcrypt.gensalt(rounds=4)).decode()}
    objects = render({"webConfig": {"enabled": True, "config": {
        "basic_auth_users": users,
        "http_server_config": {"headers": {"X-Content-Type-Options": "nosniff"}}}}})
    path = tmp_path / "web-config.yml"
    path.write_text(one(objects, "Secret")["stringData"]["web-config.yml"], encoding="utf-8")
    web = load_web_config(str(path))
    assert [user for user, _ in web.users] == ["prometheus"]
    # The probes carry no credentials: their paths must be the ones served without basic auth.
    assert main_probe_paths(objects) <= set(OPEN_PATHS)


def main_probe_paths(objects: list[dict[str, Any]]) -> set[str]:
    main = container(objects)
    return {main[probe]["httpGet"]["path"] for probe in ("livenessProbe", "readinessProbe")}


def test_web_config_secret_is_mounted_and_passed_by_flag() -> None:
    objects = render(ALL_ON)
    main = container(objects)
    assert f"--web.config.file={WEB_CONFIG_FILE}" in main["args"]
    mount = next(m for m in main["volumeMounts"] if m["name"] == "web-config")
    assert f"{mount['mountPath']}/web-config.yml" == WEB_CONFIG_FILE
    secret = one(objects, "Secret")
    assert yaml.safe_load(secret["stringData"]["web-config.yml"]) == ALL_ON["webConfig"]["config"]
    volumes = one(objects, "Deployment")["spec"]["template"]["spec"]["volumes"]
    volume = next(v for v in volumes if v["name"] == "web-config")
    assert volume["secret"]["secretName"] == secret["metadata"]["name"]
    assert main["livenessProbe"]["httpGet"]["scheme"] == "HTTPS"
    assert one(objects, "ServiceMonitor")["spec"]["endpoints"][0]["scheme"] == "https"

    existing = render({"webConfig": {"enabled": True, "existingSecret": "my-web-config"}})
    assert not [obj for obj in existing if obj["kind"] == "Secret"]
    volumes = one(existing, "Deployment")["spec"]["template"]["spec"]["volumes"]
    assert next(v for v in volumes if v["name"] == "web-config")["secret"] == {
        "secretName": "my-web-config"}

    assert not any(arg.startswith("--web.config.file") for arg in container(render())["args"])


def test_service_monitor_scrapes_the_service_port_and_path() -> None:
    objects = render({**ALL_ON, "telemetryPath": "/custom"})
    monitor = one(objects, "ServiceMonitor")
    service = one(objects, "Service")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= \
        service["metadata"]["labels"].items()
    endpoint = monitor["spec"]["endpoints"][0]
    assert endpoint["port"] == service["spec"]["ports"][0]["name"]
    assert endpoint["path"] == "/custom"
    assert "--web.telemetry-path=/custom" in container(objects)["args"]
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"


# Values that group settings; the others (config, resources, securityContext, ...) are one row.
SECTIONS = {"image", "serviceAccount", "webConfig", "service", "serviceMonitor", "prometheusRule",
            "grafanaDashboard"}


def value_rows(values: dict[str, Any]) -> set[str]:
    rows: set[str] = set()
    for key, value in values.items():
        if key in SECTIONS:
            rows.update(f"{key}.{sub}" for sub in value)
        else:
            rows.add(key)
    return rows


def test_readme_values_table_lists_every_value() -> None:
    readme = (CHART / "README.md").read_text(encoding="utf-8")
    documented = set(re.findall(r"^\| `([^`]+)` \|", readme, re.MULTILINE))
    defaults = yaml.safe_load((CHART / "values.yaml").read_text(encoding="utf-8"))
    assert value_rows(defaults) == documented
    schema = helm.Chart.load(CHART).schema
    assert schema is not None
    assert set(schema["properties"]) - {"global"} == set(defaults)
