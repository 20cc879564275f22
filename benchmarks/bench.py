"""Scale benchmark: first refresh, steady-state API economy, scrape cost and memory.

    python -m benchmarks.bench                   # 10,000 jobs, 5 ms per API call, 500 refreshes
    python -m benchmarks.bench --refreshes 50    # a quicker memory check
    python -m benchmarks.bench --profile         # pyinstrument profiles of refresh and render
    python -m benchmarks.bench --first-data      # only: first data on /metrics vs first refresh

The simulator runs in its own process (so it does not share the GIL with what is measured).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config
from prometheus_client import generate_latest
from prometheus_client.registry import CollectorRegistry

from exporter.aws.counting import ApiRequestCounter
from exporter.aws.session import Aws, AwsSettings
from exporter.aws.target import AwsTarget
from exporter.collectors import jobs
from exporter.collectors.jobs import LIST_PAGE_SIZE
from exporter.demo.simulator import make_job
from exporter.engine.pool import CallPool
from exporter.engine.runner import TargetRefresher
from exporter.engine.selfmetrics import SelfCollector, SnapshotCollector, snapshot_families
from exporter.engine.store import SnapshotStore
from exporter.model import UNKNOWN_ACCOUNT, TargetKey
from exporter.render.exposition import CachedExposition
from exporter.web.server import HttpServer, make_app

REGION = "eu-west-1"
REPO = Path(__file__).resolve().parent.parent
TEXT = "text/plain;version=0.0.4"
PROMETHEUS_ACCEPT = ("application/openmetrics-text;version=1.0.0,application/openmetrics-text;"
                     "version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1")


def env(sim_url: str) -> dict[str, str]:
    out = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MACIE_EXPORTER_"))}
    out.update(AWS_ACCESS_KEY_ID="AKIABENCHMARK000001", AWS_SECRET_ACCESS_KEY="bench",
               AWS_DEFAULT_REGION=REGION, AWS_ENDPOINT_URL_STS=sim_url,
               AWS_ENDPOINT_URL_ORGANIZATIONS=sim_url, AWS_ENDPOINT_URL_CLOUDWATCH_LOGS=sim_url,
               AWS_EC2_METADATA_DISABLED="true", AWS_CONFIG_FILE="/nonexistent",
               AWS_SHARED_CREDENTIALS_FILE="/nonexistent")
    return out


@contextmanager
def simulator_process(*args: str) -> Iterator[str]:
    """`python -m benchmarks.fleets *args` in its own process; yields its URL."""
    proc = subprocess.Popen([sys.executable, "-m", "benchmarks.fleets", *args],
                            stdout=subprocess.PIPE, text=True, cwd=REPO)
    assert proc.stdout is not None
    url = proc.stdout.readline().strip()
    if not url:
        proc.wait(10)
        raise RuntimeError(f"the simulator exited ({proc.returncode})")
    try:
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


@contextmanager
def simulator(jobs: int, active: int, latency: float) -> Iterator[str]:
    """One target (the simulator's default account in REGION) holding `jobs` jobs."""
    with simulator_process(f"--jobs={jobs}", f"--active={active}", f"--latency={latency}",
                           f"--region={REGION}") as url:
        yield url


def reference_refresh(url: str, threads: int = 16) -> float:
    """A plain concurrent boto3 loop: every list page, then every describe on 16 threads."""
    client = boto3.client("macie2", region_name=REGION, endpoint_url=url,
                          config=Config(max_pool_connections=threads + 2))
    began = time.perf_counter()
    ids = [item["jobId"]
           for page in client.get_paginator("list_classification_jobs").paginate(
               PaginationConfig={"PageSize": LIST_PAGE_SIZE})
           for item in page["items"]]
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(lambda job_id: client.describe_classification_job(jobId=job_id), ids))
    return time.perf_counter() - began


def exporter_refresher(url: str, concurrency: int = 16) -> tuple[TargetRefresher,
                                                                  ApiRequestCounter]:
    """One target's refresher on a call pool of `concurrency` threads (daemons, left running)."""
    counter = ApiRequestCounter()
    settings = AwsSettings(endpoint_url=url, retry_mode="standard", max_attempts=3,
                           connect_timeout=5, read_timeout=20,
                           max_pool_connections=concurrency + 2)
    key = TargetKey(UNKNOWN_ACCOUNT, REGION)
    pool = CallPool(concurrency)
    pool.start()
    refresher = TargetRefresher(AwsTarget(Aws(settings, counter), key), SnapshotStore([key]),
                                pool)
    return refresher, counter


def count(counter: ApiRequestCounter, operation: str) -> int:
    return counter.total(operation)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def timed(action: Callable[[], Any], runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        began = time.perf_counter()
        action()
        out.append(time.perf_counter() - began)
    return out


def scrape_costs(refresher: TargetRefresher, counter: ApiRequestCounter,
                 scrapes: int) -> dict[str, float]:
    store = refresher.store
    live = SelfCollector(counter)
    full = CollectorRegistry(auto_describe=False, support_collectors_without_names=True)
    families = snapshot_families()
    full.register(SnapshotCollector(store.get, families))
    full.register(live)
    exposition = CachedExposition(store.get, families, [live])
    server = HttpServer("127.0.0.1", 0, make_app("/metrics", exposition))
    server.start()

    def scrape(accept: str) -> bytes:
        request = urllib.request.Request(f"http://{server.address}/metrics",
                                         headers={"Accept": accept, "Accept-Encoding": "gzip"})
        with urllib.request.urlopen(request, timeout=30) as response:
            return bytes(response.read())

    try:
        plain = gzip.decompress(scrape(TEXT))
        assert plain == generate_latest(full), "cached bytes differ from prometheus-client's"
        text = timed(lambda: scrape(TEXT), scrapes)
        openmetrics = timed(lambda: scrape(PROMETHEUS_ACCEPT), scrapes)
        reference = timed(lambda: gzip.compress(generate_latest(full)), max(5, scrapes // 20))
    finally:
        server.stop()
    series = sum(1 for line in plain.splitlines() if line and not line.startswith(b"#"))
    return {"scrape_p50_ms": statistics.median(text) * 1000,
            "scrape_p99_ms": percentile(text, 0.99) * 1000,
            "scrape_openmetrics_p50_ms": statistics.median(openmetrics) * 1000,
            "generate_latest_gzip_p50_ms": statistics.median(reference) * 1000,
            "exposition_bytes": len(plain), "series": series}


def rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"VmRSS:\s+(\d+) kB", status)
    assert match
    return int(match.group(1)) / 1024


def start_exporter(url: str, *args: str, interval: str = "1s", regions: str | None = REGION,
                   sink: Callable[[str], None] | None = None,
                   ) -> tuple[subprocess.Popen[str], str]:
    """The real exporter process against the simulator; (process, address).

    `regions` None leaves --aws.regions out (the targets of a --config.file name theirs).
    Every log line after "listening" goes to `sink` if given, and is drained either way.
    """
    flags = [f"--aws.endpoint-url={url}", f"--refresh.interval={interval}",
             "--web.listen-address=127.0.0.1:0"]
    if regions is not None:
        flags.append(f"--aws.regions={regions}")
    proc = subprocess.Popen([sys.executable, "-m", "exporter", *flags, *args],
                            env=env(url), cwd=REPO, stderr=subprocess.PIPE, text=True)
    stderr = proc.stderr
    assert stderr is not None
    while True:
        line = stderr.readline()
        if not line:
            raise RuntimeError("exporter exited")
        match = re.search(r"msg=listening address=(\S+)", line)
        if match:
            # Keep draining: a full stderr pipe would block the exporter's next log line, and
            # with it the refresh that writes it.
            def drain() -> None:
                for line in stderr:
                    if sink is not None:
                        sink(line)

            threading.Thread(target=drain, daemon=True).start()
            return proc, match.group(1)


def fetch_metrics(address: str, timeout: float = 10) -> bytes:
    """/metrics the way Prometheus scrapes it (OpenMetrics, gzip), still compressed."""
    request = urllib.request.Request(f"http://{address}/metrics", headers={
        "Accept": PROMETHEUS_ACCEPT, "Accept-Encoding": "gzip"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        assert response.headers.get("Content-Encoding") == "gzip"
        return bytes(response.read())


def scrape(address: str, timeout: float = 10) -> bytes:
    """/metrics the way Prometheus scrapes it (OpenMetrics, gzip), decompressed."""
    return gzip.decompress(fetch_metrics(address, timeout))


def ready(address: str, timeout: float = 5) -> bool:
    """/readyz answers 200."""
    try:
        with urllib.request.urlopen(f"http://{address}/readyz", timeout=timeout) as response:
            return bool(response.status == 200)
    except urllib.error.HTTPError:
        return False


def refreshes_done(address: str, pages: int, timeout: float = 10) -> int:
    """Refreshes so far, from the successful list calls: the first refresh lists every page
    (`pages`), each steady one a single page (no new jobs arrive in these benchmarks)."""
    body = scrape(address, timeout).decode()
    lists = sum(int(float(v)) for v in re.findall(
        r'api_requests_total\{[^}]*operation="ListClassificationJobs"[^}]*outcome="success"'
        r'[^}]*\} (\S+)', body))
    return 0 if lists < pages else 1 + lists - pages


def process_memory(url: str, refreshes: int, pages: int,
                   csv_path: Path | None = None) -> dict[str, float]:
    """RSS of the real exporter process after the first refresh and after `refreshes`."""
    proc, address = start_exporter(url, "--refresh.concurrency=16", "--aws.read-timeout=900ms")
    while not ready(address):
        time.sleep(0.5)
    samples: list[tuple[int, float]] = []
    try:
        while True:
            done = refreshes_done(address, pages, timeout=30)
            samples.append((done, rss_mb(proc.pid)))
            if done >= refreshes:
                break
            time.sleep(2)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(15)
    if csv_path:
        csv_path.write_text("refreshes,rss_mb\n" + "".join(f"{d},{r:.1f}\n" for d, r in samples))
    # RSS swings by tens of MB within a refresh (the render, botocore's parsing), so growth
    # compares the median of a window just after warm-up with the median of the last window.
    done = samples[-1][0]
    width = max(5, refreshes // 10)
    warm_start = min(10, max(0, done - 2 * width))
    early = [r for d, r in samples if warm_start <= d < warm_start + width] or [samples[0][1]]
    late = [r for d, r in samples if d >= done - width] or [samples[-1][1]]
    early_mb, late_mb = statistics.median(early), statistics.median(late)
    return {"rss_first_mb": samples[0][1], "rss_peak_mb": max(r for _, r in samples),
            "refreshes": done, "window": width, "warm_start": warm_start,
            "rss_early_mb": early_mb, "rss_late_mb": late_mb,
            "rss_growth_pct": (late_mb - early_mb) / early_mb * 100}


def _lines(body: bytes, name: bytes, ends: tuple[bytes, ...] = (b"",)) -> int:
    """Sample lines of the series `name` in `body` whose value line ends with one of `ends`."""
    return sum(1 for line in body.split(b"\n")
               if line.startswith(name + b"{") and line.endswith(ends))


def jobs_with_status(body: bytes) -> int:
    """Jobs that have a status on /metrics: macie_classification_job_status series at 1 (one
    per job, whatever its status)."""
    return _lines(body, b"macie_classification_job_status", (b"} 1.0", b"} 1"))


def jobs_described(body: bytes) -> int:
    """Jobs described at least once: their macie_classification_job_runs series
    (statistics.numberOfRuns, which only DescribeClassificationJob answers)."""
    return _lines(body, b"macie_classification_job_runs")


def first_data(url: str, jobs: int, poll: float = 0.25) -> dict[str, float]:
    """Seconds from the exporter's start until every job has a status on /metrics (the first
    scrape that has them all); until its first refresh is done (/readyz 200, every
    macie_exporter_refresh_success 1: the list whole and the active jobs described); and until
    every job is described (the first full refresh, which /readyz waited for before issue 23
    let the terminal jobs' first describes follow it)."""
    began = time.monotonic()
    proc, address = start_exporter(url, interval="60s")
    found: dict[str, float] = {}
    try:
        while len(found) < 3:
            # /readyz first: a scrape after it shows what readiness stood for.
            was_ready = "full_s" not in found and ready(address)
            body = scrape(address, timeout=30)
            now = time.monotonic() - began
            if "statuses_s" not in found and jobs_with_status(body) >= jobs:
                found["statuses_s"] = now
            if "described_s" not in found and jobs_described(body) >= jobs:
                found["described_s"] = now
            if was_ready:
                success = re.findall(rb"^macie_exporter_refresh_success\{[^}]*\} (\S+)$", body,
                                     re.MULTILINE)
                if success and all(float(v) == 1 for v in success):
                    found["full_s"] = now
            time.sleep(poll)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(15)
    return found


BURST = 250  # new jobs between two refreshes: more than a list page (200)


def put_jobs(url: str, jobs: list[dict[str, Any]]) -> None:
    """Jobs put in the simulator process (`POST /_simulator/jobs`)."""
    body = json.dumps({"region": REGION, "jobs": jobs}).encode()
    request = urllib.request.Request(f"{url}/_simulator/jobs", data=body, method="POST")
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200


def listed_counts(url: str) -> Counter[tuple[str, str]]:
    """(status, type) of every job, by a full boto3 list: what the counts must say."""
    client = boto3.client("macie2", region_name=REGION, endpoint_url=url)
    found: Counter[tuple[str, str]] = Counter()
    for page in client.get_paginator("list_classification_jobs").paginate():
        for item in page["items"]:
            found[(item["jobStatus"], item["jobType"])] += 1
    return found


def exported_counts(refresher: TargetRefresher) -> Counter[tuple[str, str]]:
    """macie_classification_jobs as the refresher's last refresh left it (zeros left out)."""
    (target,) = refresher.store.get().targets
    value = target.get(jobs.SLOT)
    assert value is not None
    return Counter({(status, job_type): n for (_, status, job_type), n in value.counts if n})


def changes(url: str) -> list[dict[str, object]]:
    """Steady refreshes around changes: a RUNNING job completes, then BURST new jobs arrive
    (several created in the same second as the newest known one). Per step: the list pages
    of the refresh after it and whether macie_classification_jobs equals a full list."""
    refresher, counter = exporter_refresher(url)
    assert refresher.refresh() and refresher.refresh()  # the full list, then a steady one
    client = boto3.client("macie2", region_name=REGION, endpoint_url=url)
    running = next(item for page in client.get_paginator("list_classification_jobs")
                   .paginate(filterCriteria={"includes": [{"comparator": "EQ",
                                                           "key": "jobStatus",
                                                           "values": ["RUNNING"]}]})
                   for item in page["items"])
    done = client.describe_classification_job(jobId=running["jobId"])
    newest = max(item["createdAt"] for page in client.get_paginator(
        "list_classification_jobs").paginate() for item in page["items"]).timestamp()
    steps: list[tuple[str, list[dict[str, Any]]]] = [
        ("a RUNNING job completes", [make_job(
            running["jobId"], done["name"], "COMPLETE",
            created_at=done["createdAt"].timestamp(), objects_to_process=0,
            last_run_time=time.time())]),
        (f"{BURST} new jobs arrive", [make_job(
            f"burst{i:027d}", f"burst-job-{i}", "RUNNING" if i % 10 == 0 else "COMPLETE",
            created_at=newest if i < 5 else newest + 1 + i / 1000) for i in range(BURST)]),
    ]
    out = []
    for name, put in steps:
        put_jobs(url, put)
        before = count(counter, "ListClassificationJobs")
        assert refresher.refresh()
        out.append({"step": name, "pages": count(counter, "ListClassificationJobs") - before,
                    "exact": exported_counts(refresher) == listed_counts(url)})
    refresher.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--active", type=int, default=300)
    parser.add_argument("--latency", type=float, default=0.005)
    parser.add_argument("--refreshes", type=int, default=500)
    parser.add_argument("--scrapes", type=int, default=200)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--first-data", action="store_true",
                        help="only the exporter process's first data vs first full refresh")
    parser.add_argument("--rss-csv", type=Path, help="write the RSS samples of the memory run")
    args = parser.parse_args()

    with simulator(args.jobs, args.active, args.latency) as url:
        os.environ.update(env(url))
        if args.profile:
            from pyinstrument import Profiler

            refresher, counter = exporter_refresher(url)
            with Profiler() as profiler:
                refresher.refresh()
            print(profiler.output_text(color=False, show_all=False))
            full = CollectorRegistry(auto_describe=False)
            full.register(SnapshotCollector(refresher.store.get))
            with Profiler() as profiler:
                gzip.compress(generate_latest(full))
            print(profiler.output_text(color=False, show_all=False))
            return
        if args.first_data:
            print_table(first_data_rows(first_data(url, args.jobs)))
            return

        references, firsts = [], []
        for _ in range(2):  # interleaved, best of two each
            references.append(reference_refresh(url))
            refresher, counter = exporter_refresher(url)
            began = time.perf_counter()
            assert refresher.refresh()
            firsts.append(time.perf_counter() - began)
        describes, lists = [], []
        for _ in range(3):
            before_d = count(counter, "DescribeClassificationJob")
            before_l = count(counter, "ListClassificationJobs")
            assert refresher.refresh()
            describes.append(count(counter, "DescribeClassificationJob") - before_d)
            lists.append(count(counter, "ListClassificationJobs") - before_l)
        scrape = scrape_costs(refresher, counter, args.scrapes)
        refresher.close()
        early = first_data(url, args.jobs)
        pages = max(1, -(-args.jobs // LIST_PAGE_SIZE))
        memory = process_memory(url, args.refreshes, pages, args.rss_csv)
        # Last: the jobs it adds would change the page count the memory run counts with.
        changed = changes(url)

    first, reference = min(firsts), min(references)
    rows = [
        ("jobs", f"{args.jobs}"),
        ("non-terminal jobs", f"{args.active}"),
        ("first refresh, s", f"{first:.2f}"),
        ("reference boto3 loop, s", f"{reference:.2f}"),
        ("ratio (target <= 1.5)", f"{first / reference:.2f}"),
        ("describes per steady refresh", f"{max(describes)} "
         f"({max(describes) / args.active:.2f}x non-terminal; target <= 1.1)"),
        ("list pages per steady refresh (target <= 1)",
         f"{max(lists)} (page size {LIST_PAGE_SIZE}; the first refresh lists every page)"),
        *first_data_rows(early),
        ("series exported", f"{scrape['series']:.0f}"),
        ("exposition size, MB", f"{scrape['exposition_bytes'] / 1e6:.1f}"),
        ("scrape p50 gzip text, ms", f"{scrape['scrape_p50_ms']:.2f}"),
        ("scrape p99 gzip text, ms", f"{scrape['scrape_p99_ms']:.2f}"),
        ("scrape p50 gzip OpenMetrics, ms", f"{scrape['scrape_openmetrics_p50_ms']:.2f}"),
        ("generate_latest + gzip p50, ms", f"{scrape['generate_latest_gzip_p50_ms']:.1f}"),
        ("ratio (target >= 10)",
         f"{scrape['generate_latest_gzip_p50_ms'] / scrape['scrape_p50_ms']:.0f}"),
        ("RSS after first refresh, MB", f"{memory['rss_first_mb']:.0f}"),
        ("RSS peak, MB (target <= 150)", f"{memory['rss_peak_mb']:.0f}"),
        *((f"steady refresh after {c['step']}: list pages, macie_classification_jobs "
           "exact (target: exact)",
           f"{c['pages']}, {'exact' if c['exact'] else 'NOT exact'}") for c in changed),
        (f"RSS growth, median of refreshes {memory['warm_start']:.0f}-"
         f"{memory['warm_start'] + memory['window']:.0f} -> of the last {memory['window']:.0f} "
         f"of {memory['refreshes']:.0f} (target < 5%)",
         f"{memory['rss_growth_pct']:+.1f}% ({memory['rss_early_mb']:.0f} -> "
         f"{memory['rss_late_mb']:.0f} MB)"),
    ]
    print_table(rows)


def first_data_rows(early: dict[str, float]) -> list[tuple[str, str]]:
    return [
        ("exporter process: every job's status on /metrics after, s",
         f"{early['statuses_s']:.1f}"),
        ("exporter process: first refresh (readyz 200) after, s", f"{early['full_s']:.1f}"),
        ("exporter process: every job described (the first full refresh) after, s",
         f"{early['described_s']:.1f}"),
        ("ratio to readiness", f"{early['statuses_s'] / early['full_s']:.2f}"),
        ("ratio to the first full refresh (target <= 0.25; before issue 23 readiness was it)",
         f"{early['statuses_s'] / early['described_s']:.2f}"),
    ]


def print_table(rows: list[tuple[str, str]]) -> None:
    """A Markdown table of (measure, value) rows, ready for benchmarks/README.md."""
    width = max(len(k) for k, _ in rows)
    print(f"| {'measure':<{width}} | value |")
    print(f"|{'-' * (width + 2)}|-------|")
    for key, value in rows:
        print(f"| {key:<{width}} | {value} |")


if __name__ == "__main__":
    main()
