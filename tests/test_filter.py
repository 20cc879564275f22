"""--metrics.allowlist / --metrics.denylist and the process metrics, on the cached exposition:
a family filtered out has no HELP/TYPE line and is never rendered; live families are filtered
too; every format (text, OpenMetrics, gzip) agrees with prometheus-client's own rendering."""

from __future__ import annotations

import gzip
import re
from pathlib import Path

import pytest
from prometheus_client import generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from prometheus_client.registry import CollectorRegistry

from exporter.aws.counting import ApiRequestCounter
from exporter.collectors.base import Settings
from exporter.config import ConfigError, load
from exporter.engine.selfmetrics import (
    SelfCollector,
    SnapshotCollector,
    runtime_collectors,
    snapshot_families,
)
from exporter.model import TargetKey
from exporter.render.exposition import CachedExposition
from exporter.render.families import AnySpec
from exporter.render.filter import KEEP_ALL, MetricFilter, filtered
from exporter.web.server import endpoints
from exporter.web.stats import HttpStats
from tests.snapshots import ACCOUNT, snapshot

OPENMETRICS = "application/openmetrics-text; version=1.0.0"
RUNTIME = ("process_cpu_seconds", "process_resident_memory_bytes", "python_info",
           "python_gc_collections")


def keep(allow: str = "", deny: str = "") -> MetricFilter:
    return load([f"--metrics.allowlist={allow}", f"--metrics.denylist={deny}"],
                environ={}).metric_filter


def type_lines(body: bytes) -> list[str]:
    return re.findall(r"^# TYPE (\S+) ", body.decode(), re.MULTILINE)


def test_expressions_match_whole_names_and_the_denylist_wins() -> None:
    only_jobs = keep(allow="macie_classification_job_.*")
    assert only_jobs.keeps("macie_classification_job_runs", "gauge")
    assert not only_jobs.keeps("macie_classification_jobs", "gauge")  # fullmatch, no prefix
    assert not keep(allow="macie").keeps("macie_status", "gauge")
    both = keep(allow="macie_.*", deny="macie_s3_.*,macie_usage_quota_bytes")
    assert both.keeps("macie_status", "gauge")
    assert not both.keeps("macie_s3_bucket_info", "gauge")
    assert not both.keeps("macie_usage_quota_bytes", "gauge")
    # A counter by either name: its family name, or the _total name the text format shows.
    for name in ("macie_exporter_api_requests", "macie_exporter_api_requests_total"):
        assert not keep(deny=name).keeps("macie_exporter_api_requests", "counter")
    assert keep(deny="macie_status_total").keeps("macie_status", "gauge")  # a gauge: one name
    assert KEEP_ALL.keeps("anything", "gauge") and not KEEP_ALL.active


@pytest.mark.parametrize(("flag", "text"), [("--metrics.allowlist", "macie_(s3"),
                                            ("--metrics.denylist", "process_*,[z-a]")])
def test_an_invalid_expression_names_the_flag_and_the_expression(flag: str, text: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load([f"{flag}={text}"], environ={})
    message = str(caught.value)
    assert message.startswith(f"{flag}: invalid regular expression ")
    bad = text.split(",")[-1]
    assert repr(bad) in message


def test_a_yaml_list_keeps_expressions_that_hold_commas(tmp_path: Path) -> None:
    path = tmp_path / "config.yml"
    path.write_text("metrics:\n  denylist: ['macie_s3_bucket_.{4,7}']\n", encoding="utf-8")
    loaded = load([f"--config.file={path}"], environ={}).metric_filter
    assert not loaded.keeps("macie_s3_bucket_objects", "gauge")
    assert loaded.keeps("macie_s3_bucket_findings", "gauge")
    with pytest.raises(ConfigError, match=r"MACIE_EXPORTER_METRICS_DENYLIST: invalid regular "
                                          r"expression '\('"):
        load([], environ={"MACIE_EXPORTER_METRICS_DENYLIST": "("})


def test_a_filtered_family_is_not_among_the_families_rendered() -> None:
    every = snapshot_families(Settings())
    kept = snapshot_families(Settings(), keep=keep(deny="macie_s3_.*,macie_exporter_refresh_.*"))
    left_out = {spec.name for spec in every} - {spec.name for spec in kept}
    assert "macie_s3_bucket_info" in left_out and "macie_exporter_refresh_success" in left_out
    assert all(name.startswith(("macie_s3_", "macie_exporter_refresh_")) for name in left_out)
    # Exposition order is kept.
    assert [s.name for s in every if s.name not in left_out] == [s.name for s in kept]


class Exporter:
    """What cli.Exporter assembles: the snapshot's families and the live collectors, all
    filtered by one MetricFilter, with or without the runtime collectors."""

    def __init__(self, metric_filter: MetricFilter, runtime: bool = True) -> None:
        self.snapshot = snapshot()
        self.requests = ApiRequestCounter()
        self.requests.inc(TargetKey(ACCOUNT, "eu-west-1"), "ListClassificationJobs", "success")
        self.families: tuple[AnySpec, ...] = snapshot_families(Settings(), keep=metric_filter)
        self.live = SelfCollector(self.requests, build=("0.0.0", "3.11.0", "1.0.0"),
                                  shard=(1, 3), keep=metric_filter)
        self.others = [filtered(HttpStats(endpoints("/metrics")), metric_filter)]
        if runtime:
            self.others.append(filtered(runtime_collectors(), metric_filter))
        self.exposition = CachedExposition(lambda: self.snapshot, self.families,
                                           [self.live, *self.others])

    def reference(self) -> CollectorRegistry:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(SnapshotCollector(lambda: self.snapshot, self.families))
        registry.register(self.live)
        for collector in self.others:
            registry.register(collector)
        return registry


@pytest.mark.parametrize(("accept", "encoder"), [(None, generate_latest),
                                                 (OPENMETRICS, generate_openmetrics)])
def test_process_metrics_are_served_in_every_format(accept: str | None,
                                                    encoder: object) -> None:
    exporter = Exporter(KEEP_ALL)
    _, body = exporter.exposition.render(accept, None)
    headers, compressed = exporter.exposition.render(accept, "gzip")
    assert dict(headers)["Content-Encoding"] == "gzip"
    names = type_lines(body)
    counter = "process_cpu_seconds" if accept else "process_cpu_seconds_total"
    for name in (counter, "process_resident_memory_bytes", "process_open_fds", "python_info",
                 "python_gc_objects_collected" if accept else "python_gc_objects_collected_total"):
        assert name in names, name
    assert type_lines(gzip.decompress(compressed)) == names
    assert names == type_lines(encoder(exporter.reference()))  # type: ignore[operator]
    assert names[-3:] == (["python_gc_objects_collected", "python_gc_objects_uncollectable",
                           "python_gc_collections"] if accept else
                          ["python_gc_objects_collected_total",
                           "python_gc_objects_uncollectable_total",
                           "python_gc_collections_total"])


def test_without_the_runtime_collectors_there_are_no_process_metrics() -> None:
    _, body = Exporter(KEEP_ALL, runtime=False).exposition.render(None, None)
    assert not [n for n in type_lines(body) if n.startswith(("process_", "python_"))]
    assert "macie_exporter_shards" in type_lines(body)


@pytest.mark.parametrize("accept", [None, OPENMETRICS])
def test_filters_apply_to_snapshot_live_and_process_families_alike(accept: str | None) -> None:
    metric_filter = keep(allow="macie_.*,process_.*,python_info",
                         deny="macie_s3_.*,macie_exporter_api_requests_total,"
                              "macie_exporter_http_connections_dropped,process_open_fds,"
                              "macie_exporter_shard_index")
    exporter = Exporter(metric_filter)
    for encoding in (None, "gzip"):
        _, body = exporter.exposition.render(accept, encoding)
        if encoding:
            body = gzip.decompress(body)
        text = body.decode()
        names = type_lines(body)
        for gone in ("macie_s3_bucket_info", "macie_exporter_api_requests",
                     "macie_exporter_http_connections_dropped", "process_open_fds",
                     "macie_exporter_shard_index", "python_gc_collections"):
            assert not re.search(rf"^# (HELP|TYPE) {gone}(_total)? ", text, re.MULTILINE), gone
            assert not re.search(rf"^{gone}(_total)?[{{ ]", text, re.MULTILINE), gone
        for kept in ("macie_classification_job_info", "macie_exporter_shards",
                     "macie_exporter_build_info", "python_info", "process_max_fds"):
            assert kept in names, kept
        assert [n for n in names if not n.startswith(("macie_", "process_", "python_info"))] \
            == []
        if accept:
            assert text.endswith("# EOF\n")
        # The same families as prometheus-client renders for the same collectors.
        reference = (generate_openmetrics if accept else generate_latest)(exporter.reference())
        assert names == type_lines(reference)


def test_a_name_filter_still_selects_among_the_kept_families() -> None:
    exporter = Exporter(keep(deny="process_.*"))
    _, body = exporter.exposition.render(None, None, ["python_info", "process_open_fds"])
    assert type_lines(body) == ["python_info"]


def test_shard_gauges_are_always_there() -> None:
    _, body = Exporter(KEEP_ALL, runtime=False).exposition.render(None, None)
    text = body.decode()
    assert "\nmacie_exporter_shard_index 1.0\n" in text
    assert "\nmacie_exporter_shards 3.0\n" in text
