"""Live reload of the real exporter process against the simulator: SIGHUP, POST /-/reload and
a changed config file, while a scraper keeps scraping /metrics."""

from __future__ import annotations

import os
import re
import signal
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from exporter.demo.simulator import Simulator, make_job
from exporter.reload import CHECK_INTERVAL_ENV
from tests.conftest import ExporterProcess, Samples, exporter_env, parse, series, value, wait_for

Start = Callable[..., ExporterProcess]
ACCOUNT = "123456789012"  # the simulator's account (GetCallerIdentity)
KEPT, GONE, NEW = "eu-west-1", "eu-west-2", "us-east-1"


def seed(sim: Simulator) -> None:
    """Three terminal jobs per region: each is described once, ever, unless something asks
    for it again."""
    for region in (KEPT, GONE, NEW):
        for i in range(3):
            sim.put_job(region, make_job(f"{region}-done{i}", f"scan-{i}", "COMPLETE"))


def regions_config(path: Path, *regions: str, extra: str = "") -> None:
    path.write_text(f"aws:\n  regions: [{', '.join(regions)}]\n{extra}", encoding="utf-8")


def polled(samples: Samples) -> set[str]:
    return {labels["region"] for labels in series(samples, "macie_exporter_refresh_success")}


def describes(sim: Simulator, region: str) -> int:
    return sim.target_requests[("DescribeClassificationJob", ACCOUNT, region)]


def post(exporter: ExporterProcess, path: str = "/-/reload", method: str = "POST"
         ) -> tuple[int, dict[str, str], str]:
    request = urllib.request.Request(f"http://{exporter.address}{path}", method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read().decode()


class Scraper:
    """Scrapes /metrics in a loop; records every answer's status and whether the kept target's
    jobs were there."""

    def __init__(self, exporter: ExporterProcess) -> None:
        self.exporter = exporter
        self.results: list[tuple[int, bool]] = []
        self.errors: list[Exception] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                status, _, body = self.exporter.get()
                jobs = series(parse(body.decode()), "macie_classification_job_info",
                              region=KEPT) if status == 200 else []
                self.results.append((status, len(jobs) == 3))
            except Exception as err:  # a refused or broken connection is a failed scrape
                self.errors.append(err)
            self._stop.wait(0.05)

    @contextmanager
    def running(self) -> Iterator[Scraper]:
        self._thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            self._thread.join(15)


def reload_lines(exporter: ExporterProcess, msg: str) -> list[str]:
    return [line for line in exporter.lines if f'msg="{msg}"' in line]


@pytest.mark.parametrize("trigger", ["signal", "http"])
def test_a_reload_adds_and_removes_targets_and_keeps_the_others(
        sim: Simulator, start: Start, tmp_path: Path, trigger: str) -> None:
    seed(sim)
    config = tmp_path / "config.yml"
    regions_config(config, KEPT, GONE)
    exporter = start(f"--config.file={config}", "--web.enable-lifecycle")
    exporter.wait_metric(lambda s: polled(s) == {KEPT, GONE}
                         and len(series(s, "macie_classification_job_info")) == 6,
                         what="both regions' jobs")
    wait_for(lambda: describes(sim, KEPT) == 3, what="the kept region's jobs described")
    before = exporter.scrape()
    assert value(before, "macie_exporter_config_last_reload_successful") == 1
    loaded = value(before, "macie_exporter_config_last_reload_success_timestamp_seconds")
    assert loaded is not None and loaded <= time.time()

    with Scraper(exporter).running() as scraper:
        wait_for(lambda: len(scraper.results) >= 5, what="scrapes before the reload")
        regions_config(config, KEPT, NEW)
        if trigger == "signal":
            exporter.proc.send_signal(signal.SIGHUP)
        else:
            status, _, body = post(exporter)
            assert status == 200, body
            assert body.startswith("config reloaded:") and "added=1 removed=1" in body
        after = exporter.wait_metric(
            lambda s: polled(s) == {KEPT, NEW}
            and len(series(s, "macie_classification_job_info", region=NEW)) == 3,
            what="the new region in, the removed one out")
        wait_for(lambda: describes(sim, NEW) == 3, what="the new region's jobs described")
        count = len(scraper.results)
        wait_for(lambda: len(scraper.results) >= count + 5, what="scrapes after the reload")

    assert not scraper.errors, scraper.errors
    assert all(status == 200 for status, _ in scraper.results), scraper.results
    assert all(kept for _, kept in scraper.results), "the kept region's jobs had a gap"
    assert not series(after, "macie_classification_job_info", region=GONE)
    assert not series(after, "macie_exporter_api_requests_total", region=GONE)
    # The kept target's jobs were not described again, nor its account asked for again.
    assert describes(sim, KEPT) == 3
    assert sim.requests["GetCallerIdentity"] == 1
    assert value(after, "macie_exporter_config_last_reload_successful") == 1
    reloaded = value(after, "macie_exporter_config_last_reload_success_timestamp_seconds")
    assert reloaded is not None and reloaded > loaded
    (line,) = reload_lines(exporter, "config reloaded")
    assert f"trigger={trigger}" in line and "added=1 removed=1" in line


def test_a_bad_config_changes_nothing_until_a_good_one(sim: Simulator, start: Start,
                                                       tmp_path: Path) -> None:
    seed(sim)
    config = tmp_path / "config.yml"
    regions_config(config, KEPT)
    exporter = start(f"--config.file={config}", "--web.enable-lifecycle")
    exporter.wait_metric(lambda s: polled(s) == {KEPT}, what="the first refresh")
    loaded = value(exporter.scrape(),
                   "macie_exporter_config_last_reload_success_timestamp_seconds")

    regions_config(config, KEPT, NEW, extra="refresh:\n  intervl: 5s\n")
    status, _, body = post(exporter)
    assert status == 400
    assert body == f"config not reloaded: config file {config}: unknown key refresh.intervl\n"
    samples = exporter.wait_metric(
        lambda s: value(s, "macie_exporter_config_last_reload_successful") == 0,
        what="the failed reload's metric")
    assert value(samples, "macie_exporter_config_last_reload_success_timestamp_seconds") \
        == loaded
    (error,) = [line for line in exporter.lines if "level=error" in line]
    assert 'msg="config not reloaded; the running configuration is kept"' in error
    assert "unknown key refresh.intervl" in error and "trigger=http" in error
    # The running configuration keeps serving: one region, refreshed every second.
    listed = sim.target_requests[("GetMacieSession", ACCOUNT, KEPT)]
    exporter.wait_metric(lambda s: value(s, "macie_exporter_refresh_success", region=KEPT)
                         == 1 and polled(s) == {KEPT}, what="the old config serving")
    assert sim.target_requests[("ListClassificationJobs", ACCOUNT, NEW)] == 0
    assert sim.target_requests[("GetMacieSession", ACCOUNT, KEPT)] >= listed

    regions_config(config, KEPT, NEW)
    exporter.proc.send_signal(signal.SIGHUP)
    samples = exporter.wait_metric(
        lambda s: value(s, "macie_exporter_config_last_reload_successful") == 1
        and polled(s) == {KEPT, NEW}, what="the good reload")
    reloaded = value(samples, "macie_exporter_config_last_reload_success_timestamp_seconds")
    assert loaded is not None and reloaded is not None and reloaded > loaded
    assert len([line for line in exporter.lines if "level=error" in line]) == 1


def swap(link_dir: Path, text: str, name: str) -> None:
    """What the kubelet does to a ConfigMap volume: the data in a new directory, then the
    `..data` symlink swapped to it in one rename; the old directory goes."""
    new = link_dir / name
    new.mkdir()
    (new / "config.yml").write_text(text, encoding="utf-8")
    old = os.readlink(link_dir / "..data") if (link_dir / "..data").exists() else None
    (link_dir / "..data_tmp").symlink_to(name)
    os.replace(link_dir / "..data_tmp", link_dir / "..data")
    if old is not None:
        for leftover in (link_dir / old).iterdir():
            leftover.unlink()
        (link_dir / old).rmdir()


def test_a_changed_config_map_is_picked_up_by_the_watcher(sim: Simulator, start: Start,
                                                          tmp_path: Path) -> None:
    seed(sim)
    volume = tmp_path / "config"
    volume.mkdir()
    text = f"aws:\n  regions: [{KEPT}]\n"
    swap(volume, text, "..2026_01_01_00_00_00.1")
    (volume / "config.yml").symlink_to("..data/config.yml")
    exporter = start(f"--config.file={volume / 'config.yml'}",
                     env=exporter_env(sim, **{CHECK_INTERVAL_ENV: "0.2"}))
    exporter.wait_metric(lambda s: polled(s) == {KEPT}, what="the first refresh")

    # The same content in a new directory (a new inode): looked at, not reloaded.
    swap(volume, text, "..2026_01_01_00_01_00.2")
    wait_for(lambda: any("its content did not; not reloaded" in line
                         for line in exporter.lines), what="the watcher to see the swap")
    swap(volume, f"aws:\n  regions: [{KEPT}, {NEW}]\n", "..2026_01_01_00_02_00.3")
    exporter.wait_metric(lambda s: polled(s) == {KEPT, NEW}, what="the new region")
    (line,) = reload_lines(exporter, "config reloaded")
    assert "trigger=file" in line
    assert describes(sim, KEPT) == 3


def test_reload_endpoint_without_the_lifecycle_flag(sim: Simulator, start: Start,
                                                    tmp_path: Path) -> None:
    config = tmp_path / "config.yml"
    regions_config(config, KEPT)
    exporter = start(f"--config.file={config}")
    exporter.wait_metric(lambda s: polled(s) == {KEPT}, what="the first refresh")
    regions_config(config, KEPT, NEW)
    status, _, body = post(exporter)
    assert (status, body) == (403, "Lifecycle API is not enabled.\n")
    for method in ("GET", "HEAD", "DELETE"):
        status, headers, _ = post(exporter, method=method)
        assert status == 405 and headers["Allow"] == "POST, PUT", method
    assert not reload_lines(exporter, "config reloaded")
    # SIGHUP needs no flag; what cannot change without a restart is named and kept.
    regions_config(config, KEPT, NEW, extra="web:\n  telemetry_path: /other\n")
    exporter.proc.send_signal(signal.SIGHUP)
    samples = exporter.wait_metric(lambda s: polled(s) == {KEPT, NEW}, what="the reload")
    assert value(samples, "macie_exporter_http_requests_total", handler="/-/reload",
                 code="403") == 1
    (warning,) = [line for line in exporter.lines if "level=warn" in line
                  and "cannot change without a restart" in line]
    assert re.search(r"option=web\.telemetry-path\b", warning)
    assert exporter.get("/other")[0] == 404


def test_a_new_tag_label_and_a_collector_switched_off_reach_the_exposition(
        sim: Simulator, start: Start, tmp_path: Path) -> None:
    for i in range(3):
        sim.put_job(KEPT, make_job(f"done{i}", status="COMPLETE", tags={"team": f"t{i}"}))
    config = tmp_path / "config.yml"
    regions_config(config, KEPT)
    exporter = start(f"--config.file={config}")
    exporter.wait_metric(lambda s: len(series(s, "macie_classification_job_runs")) == 3
                         and series(s, "macie_exporter_collector_success",
                                    collector="findings"), what="jobs described, findings")
    wait_for(lambda: describes(sim, KEPT) == 3, what="every job described once")
    _, _, body = exporter.get()
    assert b"macie_classification_job_tags" not in body

    regions_config(config, KEPT, extra="jobs:\n  tag_labels: [team]\n"
                                       "collector:\n  findings: false\n")
    exporter.proc.send_signal(signal.SIGHUP)
    samples = exporter.wait_metric(
        lambda s: {labels.get("tag_team") for labels in
                   series(s, "macie_classification_job_tags")} == {"t0", "t1", "t2"},
        what="the new tag label on every job")
    # Every job was described once more, for its tags; their series had no gap meanwhile.
    assert describes(sim, KEPT) == 6
    assert len(series(samples, "macie_classification_job_runs")) == 3
    assert not series(samples, "macie_exporter_collector_success", collector="findings")
    _, _, body = exporter.get()
    assert b"macie_classification_job_findings" not in body  # not even HELP and TYPE
