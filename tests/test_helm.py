"""The Helm chart, rendered and linted by Helm's own engine (helm-python-sdk embeds its Go SDK).

Core objects are validated with kubernetes-validate --strict; the ServiceMonitor and the
PrometheusRule against the prometheus-operator models; the PrometheusRule's rules and the
dashboard ConfigMap against deploy/prometheus/alerts.yml and grafana/ (their single sources).
The rendered flags, env and config file go through the exporter's own parser, the sharded
StatefulSet's pods with their shard index resolved as the downward API would.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import bcrypt
import helm_python as helm
import kubernetes_validate
import pytest
import yaml
from kubernetes_validate import utils as kv_utils

from exporter import __version__
from exporter import config as exporter_config
from exporter.web.server import OPEN_PATHS
from exporter.web.webconfig import load_web_config
from tests.conftest import REPO, require_tool

pytestmark = pytest.mark.tools

CHART = REPO / "deploy" / "helm" / "macie-exporter"
ALERTS = REPO / "deploy" / "prometheus" / "alerts.yml"
RECORDING_RULES = REPO / "deploy" / "prometheus" / "rules.yml"
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

SHARDS = 3
POD_INDEX_LABEL = "apps.kubernetes.io/pod-index"
SHARD_INDEX_ENV = {"name": "MACIE_EXPORTER_SHARD_INDEX", "valueFrom": {
    "fieldRef": {"fieldPath": f"metadata.labels['{POD_INDEX_LABEL}']"}}}
DISCOVERY: dict[str, Any] = {
    "interval": "1h",
    "organizations": {
        "role_arn": "arn:aws:iam::111111111111:role/macie-exporter-discovery",
        "external_id": "example",
        "member_role_name": "macie-exporter",
        "member_external_id": "example",
        "exclude_accounts": ["222222222222"],
    },
}
# Every option on, sharded, with AWS Organizations discovery.
SHARDED: dict[str, Any] = {**ALL_ON, "sharding": {"shards": SHARDS}, "discovery": DISCOVERY}

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
    ({"sharding": {"shards": 0}}, "/sharding/shards"),
    ({"sharding": {"shards": "3"}}, "/sharding/shards"),
    ({"sharding": {"replicas": 3}}, "additional properties 'replicas' not allowed"),
    ({"discovery": {"interval": "1h"}}, "missing property 'organizations'"),
    ({"discovery": {"organizations": {}}}, "missing property 'member_role_name'"),
    ({"discovery": {"organizations": {"member_role_name": "m", "accounts": ["222222222222"]}}},
     "additional properties 'accounts' not allowed"),
    ({"discovery": {"organizations": {"member_role_name": "m",
                                      "exclude_accounts": [222222222222]}}},
     "/discovery/organizations/exclude_accounts/0"),
    ({"discovery": {"organizations": {"member_role_name": "m", "external_id": "e"}}},
     "'role_arn' required"),
    ({"discovery": {"interval": "hourly", "organizations": {"member_role_name": "m"}}},
     "/discovery/interval"),
    ({"prometheusRule": {"job": 1}}, "/prometheusRule/job"),
    ({"prometheusRule": {"job": 'a"b'}}, "/prometheusRule/job"),
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


def workload(objects: list[dict[str, Any]]) -> dict[str, Any]:
    """The Deployment, or the StatefulSet when sharded: never both."""
    found = [obj for obj in objects if obj["kind"] in ("Deployment", "StatefulSet")]
    assert len(found) == 1, [obj["kind"] for obj in found]
    return found[0]


def container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    containers = workload(objects)["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return dict(containers[0])


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """A Kubernetes LabelSelector (matchLabels and matchExpressions) against a set of labels."""
    if not selector.get("matchLabels", {}).items() <= labels.items():
        return False
    for expression in selector.get("matchExpressions", []):
        key, values = expression["key"], expression.get("values", [])
        matched = {"In": key in labels and labels[key] in values,
                   "NotIn": key not in labels or labels[key] not in values,
                   "Exists": key in labels,
                   "DoesNotExist": key not in labels}[expression["operator"]]
        if not matched:
            return False
    return True


def local_args(args: list[str], mount_path: str, tmp_path: Path, config_text: str) -> list[str]:
    """The container's args with the mounted files replaced by copies under tmp_path."""
    (tmp_path / "config.yml").write_text(config_text, encoding="utf-8")
    (tmp_path / "web-config.yml").write_text("{}\n", encoding="utf-8")
    return [arg.replace(f"{mount_path}/config.yml", str(tmp_path / "config.yml"))
               .replace(WEB_CONFIG_FILE, str(tmp_path / "web-config.yml")) for arg in args]


def config_file(objects: list[dict[str, Any]]) -> str:
    configmaps = [obj for obj in objects if obj["kind"] == "ConfigMap"
                  and not obj["metadata"]["name"].endswith("-dashboard")]
    assert len(configmaps) == 1
    return str(configmaps[0]["data"]["config.yml"])


def test_chart_metadata_matches_the_exporter() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text(encoding="utf-8"))
    assert chart["apiVersion"] == "v2"
    assert chart["appVersion"] == __version__
    assert helm.Chart.load(CHART).name == "macie-exporter"


@pytest.mark.parametrize("values", [{}, ALL_ON, SHARDED], ids=["defaults", "all-on", "sharded"])
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
    chart.validate_schema(SHARDED)
    chart.validate_schema({"discovery": None, "sharding": {"shards": 1}})
    chart.validate_schema({"discovery": {"organizations": {"member_role_name": "macie-exporter"}}})
    chart.validate_schema({"prometheusRule": {"enabled": True, "job": "kube-system/macie"}})


def current_kubernetes() -> str:
    version = str(kv_utils.latest_version())
    major, minor = (int(part) for part in version.split(".")[:2])
    assert (major, minor) >= (1, 33), f"kubernetes-validate knows only up to {version}"
    return version


@pytest.mark.parametrize("values", [{}, ALL_ON, SHARDED], ids=["defaults", "all-on", "sharded"])
def test_core_objects_pass_kubernetes_validate_strict(values: dict[str, Any]) -> None:
    # The current release, and the oldest the chart supports: Chart.yaml's kubeVersion, or 1.28
    # when sharded (the apps.kubernetes.io/pod-index label).
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text(encoding="utf-8"))
    minimum = re.fullmatch(r">=(\d+\.\d+\.\d+)-0", chart["kubeVersion"])
    assert minimum, chart["kubeVersion"]
    oldest = "1.28.0" if "sharding" in values else minimum.group(1)
    core = [obj for obj in render(values) if not obj["apiVersion"].startswith("monitoring.")]
    assert core
    for version in (current_kubernetes(), oldest):
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


@pytest.mark.parametrize("values", [ALL_ON, SHARDED], ids=["all-on", "sharded"])
@pytest.mark.parametrize("kind", ["ServiceMonitor", "PrometheusRule"])
def test_operator_objects_validate_against_prometheus_operator_models(
        kind: str, values: dict[str, Any]) -> None:
    # Imported here: the models take ~2 s to import, which every pytest worker would pay at
    # collection, also in the fast lane that deselects this module.
    from cloudcoil.models.prometheus_operator import v1 as monitoring

    obj = one(render(values), kind)
    parsed: monitoring.ServiceMonitor | monitoring.PrometheusRule
    if kind == "ServiceMonitor":
        parsed = monitoring.ServiceMonitor.model_validate(obj)
    else:
        parsed = monitoring.PrometheusRule.model_validate(obj)
    # The models ignore unknown fields; a field the operator does not know would be lost here.
    dumped = without_nulls(parsed.model_dump(mode="json", by_alias=True, exclude_unset=True))
    assert dumped == obj


def source_groups(job: str) -> list[dict[str, Any]]:
    """The alerts' groups with MacieExporterDown's job set to `job`, then the recording
    rules' groups: what the PrometheusRule must hold."""
    alerts = ALERTS.read_text(encoding="utf-8").replace('{job="macie-exporter"}',
                                                        f'{{job="{job}"}}')
    return [*yaml.safe_load(alerts)["groups"],
            *yaml.safe_load(RECORDING_RULES.read_text(encoding="utf-8"))["groups"]]


def exporter_down(groups: list[dict[str, Any]]) -> str:
    (rule,) = [rule for group in groups for rule in group["rules"]
               if rule.get("alert") == "MacieExporterDown"]
    return str(rule["expr"])


def test_prometheus_rule_holds_exactly_the_alerts_and_recording_rules() -> None:
    # The chart carries copies (Helm's .Files cannot reach outside the chart directory).
    for source in (ALERTS, RECORDING_RULES):
        copy = CHART / "files" / source.name
        assert copy.read_bytes() == source.read_bytes(), (
            f"run: cp {source.relative_to(REPO)} {copy.relative_to(REPO)}")
    objects = render(ALL_ON)
    rule = one(objects, "PrometheusRule")
    # The job of the ServiceMonitor's targets: the prometheus-operator names it after the
    # Service (no jobLabel is set).
    service = one(objects, "Service")["metadata"]["name"]
    assert "jobLabel" not in one(objects, "ServiceMonitor")["spec"]
    assert rule["spec"]["groups"] == source_groups(service)
    assert exporter_down(rule["spec"]["groups"]) == (
        f'up{{job="{service}"}} == 0 or absent(up{{job="{service}"}})')
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert [g["name"] for g in rule["spec"]["groups"]][-2:] == ["macie-rollups",
                                                                 "macie-exporter-rollups"]


def test_the_exporter_down_job_is_a_value(tmp_path: Path) -> None:
    rule = one(render({**ALL_ON, "prometheusRule": {"enabled": True, "job": "macie"}}),
               "PrometheusRule")
    assert rule["spec"]["groups"] == source_groups("macie")
    # What the operator hands Prometheus is a valid rule file.
    rendered = tmp_path / "rules.yml"
    rendered.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}), encoding="utf-8")
    check = subprocess.run([require_tool("promtool"), "check", "rules", str(rendered)],
                           capture_output=True, text=True, timeout=60, check=False)
    assert check.returncode == 0, check.stdout + check.stderr
    # The file's documented default, unchanged, when the value names it.
    rule = one(render({**ALL_ON, "prometheusRule": {"enabled": True, "job": "macie-exporter"}}),
               "PrometheusRule")
    assert rule["spec"]["groups"] == source_groups("macie-exporter")
    assert 'job="macie-exporter"' in exporter_down(
        yaml.safe_load(ALERTS.read_text(encoding="utf-8"))["groups"])


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
    text = config_file(objects)
    assert yaml.safe_load(text) == ALL_ON["config"]
    main = container(objects)
    mount = next(m for m in main["volumeMounts"] if m["name"] == "config")
    assert f"--config.file={mount['mountPath']}/config.yml" in main["args"]
    assert "subPath" not in mount  # the kubelet updates a directory mount, never a subPath

    # The exporter's own parser takes the rendered flags and file.
    args = local_args(main["args"], mount["mountPath"], tmp_path, text)
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


def test_default_render_is_the_one_pod_deployment() -> None:
    objects = render()
    assert workload(objects)["kind"] == "Deployment"
    assert not [obj for obj in objects if obj["kind"] == "StatefulSet"]
    main = container(objects)
    assert "env" not in main
    assert not [arg for arg in main["args"] if arg.startswith("--shard.")]
    assert render({"sharding": {"shards": 1}, "discovery": None}) == objects
    # Unsharded, the ServiceMonitor selects by the selector labels alone, as before sharding.
    assert "matchExpressions" not in one(render(ALL_ON), "ServiceMonitor")["spec"]["selector"]


def test_sharded_render_is_a_statefulset_of_one_pod_per_shard() -> None:
    objects = render({"sharding": {"shards": SHARDS}})
    assert sorted(obj["kind"] for obj in objects) == ["Service", "Service", "ServiceAccount",
                                                      "StatefulSet"]
    statefulset = one(objects, "StatefulSet")
    spec = statefulset["spec"]
    assert spec["replicas"] == SHARDS
    assert spec["podManagementPolicy"] == "Parallel"
    assert selects(spec["selector"], spec["template"]["metadata"]["labels"])

    main = container(objects)
    assert main["env"] == [SHARD_INDEX_ENV]
    assert f"--shard.total={SHARDS}" in main["args"]
    assert not [arg for arg in main["args"] if arg.startswith("--shard.index")]

    # The serviceName is a headless Service over the same pods; the normal Service is still there.
    services = {obj["metadata"]["name"]: obj for obj in objects if obj["kind"] == "Service"}
    headless = services.pop(spec["serviceName"])
    assert headless["spec"]["clusterIP"] == "None"
    assert headless["spec"]["selector"] == spec["selector"]["matchLabels"]
    (service,) = services.values()
    assert service["metadata"]["name"] == statefulset["metadata"]["name"]
    assert service["spec"]["selector"] == spec["selector"]["matchLabels"]
    assert "clusterIP" not in service["spec"]


@pytest.mark.parametrize("values", [{}, ALL_ON], ids=["defaults", "all-on"])
def test_statefulset_pods_are_the_deployments_pods_plus_the_shard(values: dict[str, Any]) -> None:
    deployment = one(render(values), "Deployment")["spec"]["template"]
    statefulset = one(render({**values, "sharding": {"shards": SHARDS}}),
                      "StatefulSet")["spec"]["template"]
    main = statefulset["spec"]["containers"][0]
    assert main["env"][0] == SHARD_INDEX_ENV
    del main["env"][0]
    if not main["env"]:
        del main["env"]
    main["args"].remove(f"--shard.total={SHARDS}")
    # One pod template (_helpers.tpl): the same security contexts, probes, volumes, config, etc.
    assert statefulset == deployment
    pod = statefulset["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    assert main["securityContext"]["readOnlyRootFilesystem"] is True
    assert main["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert main["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert main["readinessProbe"]["httpGet"]["path"] == "/readyz"


def pod_env(main: dict[str, Any], pod_labels: dict[str, str]) -> dict[str, str]:
    """The container's env as the kubelet resolves it; a missing label resolves to ""."""
    env: dict[str, str] = {}
    for var in main.get("env", []):
        if "value" in var:
            env[var["name"]] = var["value"]
            continue
        match = re.fullmatch(r"metadata\.labels\['([^']+)'\]",
                             var["valueFrom"]["fieldRef"]["fieldPath"])
        assert match, var
        env[var["name"]] = pod_labels.get(match.group(1), "")
    return env


def test_each_shard_runs_its_own_index_and_the_exporter_accepts_it(tmp_path: Path) -> None:
    objects = render(SHARDED)
    statefulset = one(objects, "StatefulSet")
    main = container(objects)
    mount = next(m for m in main["volumeMounts"] if m["name"] == "config")
    args = local_args(main["args"], mount["mountPath"], tmp_path, config_file(objects))
    template_labels = statefulset["spec"]["template"]["metadata"]["labels"]
    for ordinal in range(SHARDS):
        # What the StatefulSet controller (Kubernetes 1.28+) adds to pod <name>-<ordinal>.
        labels = {**template_labels, POD_INDEX_LABEL: str(ordinal),
                  "statefulset.kubernetes.io/pod-name":
                      f"{statefulset['metadata']['name']}-{ordinal}"}
        parsed = exporter_config.load(args, pod_env(main, labels))
        assert (parsed.shard_index, parsed.shard_total) == (ordinal, SHARDS)
        assert parsed.discovery is not None
    # Without the label (Kubernetes before 1.28) the exporter refuses to start rather than
    # every pod polling shard 0.
    with pytest.raises(exporter_config.ConfigError, match="MACIE_EXPORTER_SHARD_INDEX"):
        exporter_config.load(args, pod_env(main, template_labels))


def test_service_monitor_scrapes_every_shard_once() -> None:
    objects = render(SHARDED)
    monitor = one(objects, "ServiceMonitor")
    statefulset = one(objects, "StatefulSet")
    services = [obj for obj in objects if obj["kind"] == "Service"]
    assert len(services) == 2
    # Only the normal Service: through the headless one too, every pod would be scraped twice.
    selected = [svc for svc in services if selects(monitor["spec"]["selector"],
                                                    svc["metadata"]["labels"])]
    assert [svc["metadata"]["name"] for svc in selected] == [statefulset["metadata"]["name"]]
    service = selected[0]
    # Its endpoints are every ready pod, whatever its shard: each is a target of its own, with
    # its own instance (pod IP:port) and pod target labels.
    for ordinal in range(SHARDS):
        labels = {**statefulset["spec"]["template"]["metadata"]["labels"],
                  POD_INDEX_LABEL: str(ordinal)}
        assert selects({"matchLabels": service["spec"]["selector"]}, labels)
    assert "publishNotReadyAddresses" not in service["spec"]
    endpoint = monitor["spec"]["endpoints"][0]
    assert endpoint["port"] == service["spec"]["ports"][0]["name"] == "http"
    assert container(objects)["ports"][0]["name"] == service["spec"]["ports"][0]["targetPort"]
    for relabeling in endpoint.get("relabelings", []):
        assert relabeling.get("targetLabel") not in ("instance", "pod")
        assert relabeling.get("action") not in ("labeldrop", "labelkeep")


def test_sharded_names_fit_kubernetes_limits() -> None:
    objects = render({"sharding": {"shards": 2}, "fullnameOverride": "m" * 63})
    statefulset = one(objects, "StatefulSet")
    # Its pods get the label controller-revision-hash=<name>-<10 characters>: at most 63.
    assert len(statefulset["metadata"]["name"]) <= 52
    names = {obj["metadata"]["name"] for obj in objects if obj["kind"] == "Service"}
    assert len(names) == 2
    assert all(len(name) <= 63 for name in names)
    assert statefulset["spec"]["serviceName"] in names


def test_sharding_needs_kubernetes_1_28(capfd: pytest.CaptureFixture[str]) -> None:
    # `helm lint` renders in lint mode, where the chart's `fail` is logged (on stderr, by Helm's
    # Go logger) instead of raised; `helm install` against an older cluster fails with it.
    message = "sharding.shards > 1 needs Kubernetes 1.28 or later"
    for kube_version, refused in (("v1.27.16", True), ("v1.28.0", False), ("v1.25.0", False)):
        values = {"sharding": {"shards": 2}} if kube_version != "v1.25.0" else {}
        report = helm.lint(CHART, values, strict=True, namespace="monitoring",
                           kube_version=kube_version)
        assert report["errors"] == []
        assert (message in capfd.readouterr().err) is refused, kube_version


@pytest.mark.parametrize(("values", "message"), [
    ({"sharding": {"shards": 2}, "extraArgs": ["--shard.index=1"]}, "extraArgs: --shard.index=1"),
    ({"sharding": {"shards": 2}, "env": [{"name": "MACIE_EXPORTER_SHARD_TOTAL", "value": "4"}]},
     "env: MACIE_EXPORTER_SHARD_TOTAL"),
    ({"sharding": {"shards": 2}, "config": {"shard": {"total": 4}}}, "config.shard"),
    ({"discovery": DISCOVERY, "config": {"discovery": DISCOVERY}},
     "set discovery either in `discovery` or in `config.discovery`"),
], ids=["shard-flag", "shard-env", "shard-config", "discovery-twice"])
def test_contradictory_values_are_refused(values: dict[str, Any], message: str) -> None:
    with pytest.raises(helm.HelmError, match=re.escape(message)):
        render(values)
    # Unsharded, a hand-made shard (one release per shard) is allowed.
    if "sharding" in values:
        render({key: value for key, value in values.items() if key != "sharding"})


def test_discovery_alone_renders_the_config_file(tmp_path: Path) -> None:
    objects = render({"discovery": DISCOVERY})
    text = config_file(objects)
    assert yaml.safe_load(text) == {"discovery": DISCOVERY}
    main = container(objects)
    mount = next(m for m in main["volumeMounts"] if m["name"] == "config")
    assert f"--config.file={mount['mountPath']}/config.yml" in main["args"]
    assert "subPath" not in mount  # the kubelet updates a directory mount, never a subPath
    volume = next(v for v in workload(objects)["spec"]["template"]["spec"]["volumes"]
                  if v["name"] == "config")
    assert volume["configMap"]["name"] == one(objects, "ConfigMap")["metadata"]["name"]

    parsed = exporter_config.load(local_args(main["args"], mount["mountPath"], tmp_path, text), {})
    assert parsed.discovery is not None
    assert parsed.discovery.interval == 3600
    organizations = parsed.discovery.organizations
    assert organizations.member_role_name == "macie-exporter"
    assert organizations.role_arn == DISCOVERY["organizations"]["role_arn"]
    assert organizations.external_id == organizations.member_external_id == "example"
    assert organizations.exclude_accounts == frozenset({"222222222222"})


def test_discovery_merges_into_the_config_and_a_config_change_rolls_no_pod() -> None:
    objects = render({**ALL_ON, "discovery": DISCOVERY})
    assert yaml.safe_load(config_file(objects)) == {**ALL_ON["config"], "discovery": DISCOVERY}

    def template(values: dict[str, Any]) -> Any:
        return workload(render(values))["spec"]["template"]

    # The exporter reloads the mounted file itself: a new config changes the ConfigMap only,
    # so the pod template (what Kubernetes rolls pods for) stays the same.
    assert template({**ALL_ON, "discovery": DISCOVERY}) == template(ALL_ON)
    changed = {**ALL_ON, "config": {**ALL_ON["config"], "refresh": {"interval": "2m"}},
               "webConfig": {**ALL_ON["webConfig"], "config": {"basic_auth_users": {}}}}
    assert template(changed) == template(ALL_ON)
    assert config_file(render(changed)) != config_file(render(ALL_ON))
    annotations = template(ALL_ON)["metadata"].get("annotations") or {}
    assert not [name for name in annotations if name.startswith("checksum/")]


# Values that group settings; the others (config, resources, securityContext, ...) are one row.
SECTIONS = {"image", "serviceAccount", "sharding", "webConfig", "service", "serviceMonitor",
            "prometheusRule", "grafanaDashboard"}


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
