"""Many targets (issue #12): an organisation's accounts x regions against one exporter process.

    python -m benchmarks.fleet --accounts 200           # 2,000 targets, 4 cycles of 60 s (~5 min)
    python -m benchmarks.fleet --accounts 20            # 200 targets
    python -m benchmarks.fleet --accounts 2 --cycles 3  # 20 targets
    python -m benchmarks.fleet --all                    # 2, 20 and 200 accounts in a row

Each of --accounts accounts in --regions regions is one target holding 3 jobs, 1 RUNNING and 2
COMPLETE; every tenth account has Macie off in every region; with --erroring-every N, every
Nth job's last run had errors and logged three of them (20: 5% of the jobs); every call takes
5 ms. The simulator (benchmarks/fleets.py) runs in its own process and writes the exporter's
config (one target per account, an assumed role each). The real exporter process runs with
--refresh.interval=60s and its other defaults (16 call-pool threads).

Measured: the time from the exporter's start until /readyz answers 200 and /metrics has a
macie_exporter_refresh_success of 1 for every target; its threads and RSS (/proc, sampled every
0.1 s, and VmHWM); its CPU (utime + stime) per cycle; the simulator's request counts per cycle,
per operation and per target; /metrics scraped the way Prometheus does (OpenMetrics, gzip)
every 15 s. Cycles are cut 5 s before each 60 s tick, when the exporter should be idle (the
simulator's counts are read twice, 2 s apart, to check that). Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import json
import math
import re
import signal
import statistics
import subprocess
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.bench import (
    fetch_metrics,
    percentile,
    ready,
    scrape,
    simulator_process,
    start_exporter,
)
from benchmarks.fleets import (
    NEW_JOB_ID,
    PROGRESSED_OBJECTS,
    ROLE_NAME,
    Fleet,
    request_counts,
)

CLOCK_TICKS = 100  # os.sysconf("SC_CLK_TCK") on Linux
SCRAPE_EVERY = 15.0
JOB_ERRORS_INTERVAL = 300.0  # --collector.job-errors.interval's default
CUT_BEFORE_TICK = 5.0
IDLE_INTERVAL = 300.0  # --refresh.idle-interval's default
PROBE_AFTER = 180.0  # the probe job appears this long after the simulator starts
TEXT_EVERY = 4  # by default, one plain-text scrape per this many OpenMetrics scrapes
JOB_OPERATIONS = ("ListClassificationJobs", "DescribeClassificationJob", "GetMacieSession")
Counts = Counter[tuple[str, str, str]]  # (operation, account, region) -> requests


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, in seconds (/proc/<pid>/stat fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def status_fields(pid: int) -> dict[str, int]:
    """Threads, VmRSS and VmHWM (kB) from /proc/<pid>/status."""
    text = Path(f"/proc/{pid}/status").read_text()
    return {key: int(value) for key, value in
            re.findall(r"^(Threads|VmRSS|VmHWM):\s+(\d+)", text, re.MULTILINE)}


class Sampler(threading.Thread):
    """Samples a process's threads and RSS every `every` seconds until stopped."""

    def __init__(self, pid: int, every: float = 0.1) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.every = every
        self.max_threads = 0
        self.max_rss_kb = 0
        self.hwm_kb = 0
        self._stop_event = threading.Event()

    def sample(self) -> None:
        found = status_fields(self.pid)
        self.max_threads = max(self.max_threads, found.get("Threads", 0))
        self.max_rss_kb = max(self.max_rss_kb, found.get("VmRSS", 0))
        self.hwm_kb = max(self.hwm_kb, found.get("VmHWM", 0))

    def run(self) -> None:
        while not self._stop_event.wait(self.every):
            try:
                self.sample()
            except (OSError, ValueError):
                return

    def stop(self) -> None:
        self._stop_event.set()
        self.join()


@dataclass
class Scrapes:
    """/metrics every SCRAPE_EVERY seconds: latency, and what the last body held."""

    address: str
    latencies: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    last_body: bytes = b""
    last_at: float = 0.0
    text_latencies: list[float] = field(default_factory=list)
    # When (time.monotonic()) each scrape and text scrape began, in the same order.
    began_at: list[float] = field(default_factory=list)
    text_began_at: list[float] = field(default_factory=list)
    failed_at: list[float] = field(default_factory=list)  # when each failure ended
    text_bytes: int = 0
    gzip_bytes: int = 0
    text_every: int = TEXT_EVERY  # 0: OpenMetrics only, as Prometheus scrapes
    # pattern -> when (time.time()) a scrape first showed it
    watch: dict[bytes, float | None] = field(default_factory=dict)

    def once(self) -> bytes:
        began = time.perf_counter()
        try:
            compressed = fetch_metrics(self.address, timeout=10)
        except Exception as err:
            self.failures.append(repr(err))
            self.failed_at.append(time.monotonic())
            return b""
        self.latencies.append(time.perf_counter() - began)
        self.began_at.append(time.monotonic() - self.latencies[-1])
        self.gzip_bytes = len(compressed)
        self.last_body, self.last_at = gzip.decompress(compressed), time.monotonic()
        for pattern, seen in self.watch.items():
            if seen is None and re.search(pattern, self.last_body, re.MULTILINE):
                self.watch[pattern] = time.time()
        return self.last_body

    def text(self) -> None:
        """/metrics as a plain-text client asks (no OpenMetrics, no gzip)."""
        began = time.perf_counter()
        request = urllib.request.Request(f"http://{self.address}/metrics",
                                         headers={"Accept": "text/plain"})
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                self.text_bytes = len(response.read())
        except Exception as err:
            self.failures.append(f"text: {err!r}")
            self.failed_at.append(time.monotonic())
            return
        self.text_latencies.append(time.perf_counter() - began)
        self.text_began_at.append(time.monotonic() - self.text_latencies[-1])

    def every(self, stop: threading.Event) -> None:
        rounds = 0
        while True:
            self.once()
            rounds += 1
            if self.text_every and rounds % self.text_every == 0:
                self.text()
            if stop.wait(SCRAPE_EVERY):
                return


def targets_served(body: bytes) -> int:
    """Targets whose macie_exporter_refresh_success is 1 on /metrics."""
    return len(re.findall(rb"^macie_exporter_refresh_success\{[^}]*\} 1(?:\.0)?$", body,
                          re.MULTILINE))


def series(body: bytes) -> int:
    return sum(1 for line in body.split(b"\n") if line and not line.startswith(b"#"))


def assume_roles_per_account(body: bytes) -> Counter[str]:
    """AssumeRole calls per account, as the exporter counted them (any outcome)."""
    out: Counter[str] = Counter()
    for labels, value in re.findall(
            rb'^macie_exporter_api_requests_total\{([^}]*operation="AssumeRole"[^}]*)\} (\S+)$',
            body, re.MULTILINE):
        account = re.search(rb'account_id="([^"]*)"', labels)
        if account:
            out[account.group(1).decode()] += int(float(value))
    return out


def simulator_counts(url: str) -> Counts:
    return Counter({(t["operation"], t["account_id"], t["region"]): int(t["count"])
                    for t in request_counts(url)["targets"]})


@dataclass
class Cycle:
    number: int
    cpu_s: float
    calls: Counts  # requests made in this cycle
    quiet: bool  # no request in the 2 s before the cut


@dataclass
class Run:
    fleet: Fleet
    interval: float
    started_after_s: float = 0.0  # process start -> "listening"
    steady_from: int = 2  # the first steady cycle (after the start-up work)
    ready_s: float | None = None  # /readyz 200
    served_s: float | None = None  # every target's refresh_success 1 on /metrics
    cycles: list[Cycle] = field(default_factory=list)
    max_threads: int = 0
    max_rss_mb: float = 0.0
    scrape_latencies: list[float] = field(default_factory=list)  # from readiness on
    early_scrapes: list[float] = field(default_factory=list)  # both kinds, before readiness
    scrape_failures: int = 0
    series: int = 0
    assume_roles: int = 0  # the simulator's count over the run
    assume_roles_per_account: Counter[str] = field(default_factory=Counter)
    log_warnings: list[str] = field(default_factory=list)
    text_latencies: list[float] = field(default_factory=list)
    text_bytes: int = 0
    gzip_bytes: int = 0
    new_job_at: float | None = None  # epoch seconds; None: no probe
    progress_at: float | None = None
    new_job_seen: float | None = None  # when a scrape first showed it
    progress_seen: float | None = None
    reference_cpu_s: float | None = None  # boto3's own CPU for a mean steady cycle's calls
    reference_calls: int = 0

    @property
    def steady(self) -> list[Cycle]:
        return self.cycles[self.steady_from - 1:]

    @property
    def targets(self) -> int:
        return self.fleet.accounts * self.fleet.regions

    @property
    def off_targets(self) -> set[tuple[str, str]]:
        return {(a, r) for a in self.fleet.off_accounts for r in self.fleet.region_names}

    @property
    def enabled(self) -> int:
        return self.targets - len(self.off_targets)

    @property
    def active(self) -> int:
        """Enabled targets holding a RUNNING job."""
        return len(self.fleet.active_targets)

    @property
    def running_jobs(self) -> int:
        return sum(1 for a, r, k, _, _ in self.fleet.jobs() if self.fleet.running(a, r, k))

    def formula(self) -> dict[str, float]:
        """Macie calls per minute by the README's formula at default settings ("Many
        accounts"), by collector: A active targets, I idle ones, D with Macie off, R running
        jobs, E targets with an erroring job; no buckets, no members."""
        a, r = self.active, self.running_jobs
        i, d = self.enabled - a, len(self.off_targets)
        e = len(self.fleet.erroring_targets)
        per = self.interval / 60
        return {name: value * per for name, value in {
            "jobs": a + r + i * 60 / IDLE_INTERVAL,
            "status": (a + i + d) / 60,
            "findings": a * 3 / 5 + i * 3 / 1440,
            "usage": (a + i) / 60,
            "members": (a + i) / 60,
            "buckets": (a + i) / 60,
            "automated_discovery": 2 * (a + i) / 60,
            "job_errors": e / 5,
        }.items()}

    @staticmethod
    def macie_calls(cycle: Cycle) -> int:
        return sum(n for (op, _, _), n in cycle.calls.items()
                   if op not in ("AssumeRole", "GetCallerIdentity", "FilterLogEvents"))

    def by_operation(self, cycle: Cycle) -> Counter[str]:
        out: Counter[str] = Counter()
        for (operation, _, _), count in cycle.calls.items():
            out[operation] += count
        return out

    def off_requests(self, cycle: Cycle) -> int:
        """Requests of any kind made for the Macie-off targets."""
        off = self.off_targets
        return sum(n for (_, a, r), n in cycle.calls.items() if (a, r) in off)

    def log_reads(self, cycle: Cycle) -> tuple[int, int]:
        """FilterLogEvents calls: to targets with an erroring job, and to the others."""
        erroring = self.fleet.erroring_targets
        mine = sum(n for (op, a, r), n in cycle.calls.items()
                   if op == "FilterLogEvents" and (a, r) in erroring)
        others = sum(n for (op, a, r), n in cycle.calls.items()
                     if op == "FilterLogEvents" and (a, r) not in erroring)
        return mine, others

    def odd_targets(self, cycle: Cycle) -> int:
        """Enabled targets that did not get, in a steady cycle, exactly one list and one
        describe per running job (a target with a RUNNING job), or at most one list and no
        describe (an idle target)."""
        jobs = ("ListClassificationJobs", "DescribeClassificationJob")
        off, active = self.off_targets, self.fleet.active_targets
        running: Counter[tuple[str, str]] = Counter(
            (a, r) for a, r, k, _, _ in self.fleet.jobs() if self.fleet.running(a, r, k))
        got: dict[tuple[str, str], Counter[str]] = {
            (a, r): Counter() for a in self.fleet.account_ids for r in self.fleet.region_names
            if (a, r) not in off}
        for (op, a, r), n in cycle.calls.items():
            if (a, r) in got and op in jobs:
                got[(a, r)][op] += n
        odd = 0
        probe = self.fleet.first_idle_target if self.new_job_at else None
        for target, counts in got.items():
            if target == probe:
                continue  # its job comes and goes
            if target in active:
                odd += dict(counts) != {jobs[0]: 1, jobs[1]: running[target]}
            else:
                odd += counts[jobs[0]] > 1 or counts[jobs[1]] > 0
        return odd


def run(fleet: Fleet, cycles: int, interval: float, latency: float,
        extra: tuple[str, ...] = (), probe: bool = False, text_every: int = TEXT_EVERY,
        steady_from: int = 2) -> Run:
    result = Run(fleet, interval, steady_from=steady_from)
    probe_args: list[str] = []
    if probe:
        # A RUNNING job appears in an idle target after start-up, and its objects to process
        # fall once the exporter can have found it (idle interval plus one interval) and then
        # read it twice more.
        result.new_job_at = time.time() + PROBE_AFTER
        result.progress_at = result.new_job_at + IDLE_INTERVAL + 3 * interval
        probe_args = [f"--new-job-at={result.new_job_at}",
                      f"--progress-at={result.progress_at}"]
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "exporter.yaml"
        with simulator_process(
                f"--accounts={fleet.accounts}", f"--regions={fleet.regions}",
                f"--jobs-per-target={fleet.jobs_per_target}",
                f"--running-per-target={fleet.running_per_target}",
                f"--running-every={fleet.running_every}",
                f"--off-every={fleet.off_every}", f"--erroring-every={fleet.erroring_every}",
                f"--latency={latency}", *probe_args,
                f"--config={config}", *(["--discovery"] if fleet.discovery else [])) as url:
            warnings: list[str] = []

            def sink(line: str) -> None:
                if re.search(r"level=(warn|error)", line):
                    warnings.append(line.strip())

            began = time.monotonic()
            proc, address = start_exporter(url, f"--config.file={config}", *extra,
                                           interval=f"{interval:g}s", regions=None, sink=sink)
            listening = time.monotonic()
            result.started_after_s = listening - began
            sampler = Sampler(proc.pid)
            sampler.sample()
            sampler.start()
            scrapes = Scrapes(address, text_every=text_every)
            new_job = rb'^macie_classification_job_objects_to_process\{[^}]*job_id="' + \
                NEW_JOB_ID.encode() + rb'"[^}]*\} '
            if probe:
                scrapes.watch = {new_job: None, new_job + str(PROGRESSED_OBJECTS).encode(): None}
            stop = threading.Event()
            scraper = threading.Thread(target=scrapes.every, args=(stop,), daemon=True)
            scraper.start()
            try:
                result.ready_s, result.served_s = _wait_served(address, result.targets, began)
                previous, previous_cpu = Counter[tuple[str, str, str]](), 0.0
                for number in range(1, cycles + 1):
                    cut = listening + number * interval - CUT_BEFORE_TICK
                    _sleep_until(cut - 2)
                    before = simulator_counts(url)
                    _sleep_until(cut)
                    counts, cpu = simulator_counts(url), cpu_seconds(proc.pid)
                    result.cycles.append(Cycle(number, cpu - previous_cpu, counts - previous,
                                               quiet=before == counts))
                    previous, previous_cpu = counts, cpu
                stop.set()
                scraper.join()
                body = scrapes.once()
                sampler.sample()
            finally:
                stop.set()
                sampler.stop()
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()
            result.assume_roles = sum(n for (op, _, _), n in previous.items()
                                      if op == "AssumeRole")
            steady = result.steady
            mean = Counter({op: round(sum(result.by_operation(c)[op] for c in steady)
                                      / len(steady))
                            for op in {op for c in steady for op in result.by_operation(c)}})
            result.reference_calls = sum(mean.values())
            result.reference_cpu_s = reference_cpu(url, fleet, mean)
    result.max_threads = sampler.max_threads
    result.max_rss_mb = max(sampler.max_rss_kb, sampler.hwm_kb) / 1024
    # The bound holds from readiness on; the scrapes before it are reported apart.
    # /readyz is polled every 0.25 s: a scrape begun up to that much before it was seen 200
    # counts as after. Without readiness, every scrape counts as before it.
    ready_at = (began + result.ready_s - READY_POLL if result.ready_s is not None
                else math.inf)
    result.scrape_latencies = [lat for lat, at in zip(scrapes.latencies, scrapes.began_at,
                                                      strict=True) if at >= ready_at]
    result.early_scrapes = [lat for lats, ats in ((scrapes.latencies, scrapes.began_at),
                                                  (scrapes.text_latencies,
                                                   scrapes.text_began_at))
                            for lat, at in zip(lats, ats, strict=True) if at < ready_at]
    result.scrape_failures = sum(at >= ready_at for at in scrapes.failed_at)  # from readiness on
    result.series = series(body)
    result.assume_roles_per_account = assume_roles_per_account(body)
    result.log_warnings = warnings
    result.text_latencies = [lat for lat, at in zip(scrapes.text_latencies,
                                                    scrapes.text_began_at, strict=True)
                             if at >= ready_at]
    result.text_bytes, result.gzip_bytes = scrapes.text_bytes, scrapes.gzip_bytes
    if probe:
        result.new_job_seen, result.progress_seen = scrapes.watch.values()
    return result


def reference_cpu(url: str, fleet: Fleet, calls: Counter[str], threads: int = 16) -> float:
    """botocore's own CPU (this process's, `time.process_time`) for `calls`: each operation
    made that many times by plain boto3 clients on 16 threads, against the same simulator,
    with the arguments the exporter sends, spread over a few accounts' targets."""
    import boto3
    from botocore.config import Config

    sts = boto3.client("sts", region_name="us-east-1", endpoint_url=url,
                       aws_access_key_id="AKIAREFERENCE", aws_secret_access_key="x")
    running = [(a, r, job_id) for a, r, k, job_id, _ in fleet.jobs() if fleet.running(a, r, k)]
    clients = []
    for account, region, job_id in running[:8]:
        creds = sts.assume_role(RoleArn=f"arn:aws:iam::{account}:role/{ROLE_NAME}",
                                RoleSessionName="reference")["Credentials"]
        clients.append((boto3.client(
            "macie2", region_name=region, endpoint_url=url,
            aws_access_key_id=creds["AccessKeyId"],
            aws_secret_access_key=creds["SecretAccessKey"],
            aws_session_token=creds["SessionToken"],
            config=Config(retries={"mode": "standard"}, max_pool_connections=threads + 2)),
            job_id))
    severity = {"criterion": {"severity.description": {"eq": ["High"]},
                              "archived": {"eq": ["false"]}}}
    arguments: dict[str, tuple[str, dict[str, object]]] = {
        "ListClassificationJobs": ("list_classification_jobs", {
            "sortCriteria": {"attributeName": "createdAt", "orderBy": "DESC"}}),
        "DescribeClassificationJob": ("describe_classification_job", {}),
        "GetMacieSession": ("get_macie_session", {}),
        "GetFindingStatistics": ("get_finding_statistics", {
            "groupBy": "classificationDetails.jobId", "size": 1000, "findingCriteria": severity}),
        "GetUsageStatistics": ("get_usage_statistics", {"timeRange": "MONTH_TO_DATE"}),
        "ListMembers": ("list_members", {"onlyAssociated": "false"}),
        "DescribeBuckets": ("describe_buckets", {}),
        "GetAutomatedDiscoveryConfiguration": ("get_automated_discovery_configuration", {}),
        "ListAutomatedDiscoveryAccounts": ("list_automated_discovery_accounts", {}),
    }
    work = [(op, n) for op, n in calls.items() for n in range(n) if op in arguments]
    for client, _ in clients:  # models loaded and connections open before measuring
        client.get_macie_session()

    def one(item: tuple[str, int]) -> None:
        op, n = item
        client, job_id = clients[n % len(clients)]
        method, kwargs = arguments[op]
        if op == "DescribeClassificationJob":
            kwargs = {"jobId": job_id}
        # An error answer is parsed as well: the same work.
        with contextlib.suppress(client.exceptions.ClientError):
            getattr(client, method)(**kwargs)

    began = time.process_time()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(one, work))
    return time.process_time() - began


def _sleep_until(when: float) -> None:
    time.sleep(max(0.0, when - time.monotonic()))


READY_POLL = 0.25  # seconds between two /readyz polls until it turns 200


def _wait_served(address: str, targets: int, began: float,
                 timeout: float = 600) -> tuple[float | None, float | None]:
    """(seconds to /readyz 200, seconds to every target's refresh_success 1 on /metrics)."""
    ready_s = served_s = None
    deadline = time.monotonic() + timeout
    while (ready_s is None or served_s is None) and time.monotonic() < deadline:
        if ready_s is None and ready(address):
            ready_s = time.monotonic() - began
        if (ready_s is not None and served_s is None
                and targets_served(scrape(address, timeout=10)) >= targets):
            served_s = time.monotonic() - began
        time.sleep(READY_POLL if ready_s is None else 1.0)
    return ready_s, served_s


# ------------------------------------------------------------ report


def _same_or_range(values: list[int]) -> str:
    if not values:
        return "-"
    return f"{values[0]}" if len(set(values)) == 1 else f"{min(values)}-{max(values)}"


def rows(result: Run) -> dict[str, str]:
    fleet = result.fleet
    first, steady = result.cycles[0], result.steady
    startup_cpu = ", ".join(f"{c.cpu_s:.1f}" for c in result.cycles[1:result.steady_from - 1])
    first_ops = result.by_operation(first)
    steady_ops = [result.by_operation(c) for c in steady]
    steady_cpu = [c.cpu_s for c in steady]
    lat = result.scrape_latencies
    per_account = result.assume_roles_per_account
    formula = result.formula()
    idle = result.enabled - result.active
    want_lists = result.active + idle * result.interval / IDLE_INTERVAL

    def steady_op(operation: str) -> str:
        return _same_or_range([ops[operation] for ops in steady_ops])

    off = len(fleet.off_accounts)
    # Over whole rounds of the job errors collector (5 minutes) only: each target reads once a
    # round, at its own phase, so a part of a round would count some targets twice.
    rounds = int(len(steady) * result.interval // JOB_ERRORS_INTERVAL)
    whole = steady[:round(rounds * JOB_ERRORS_INTERVAL / result.interval)]
    log_reads = sum(result.log_reads(c)[0] for c in whole)
    log_reads_per_hour = log_reads * 3600 / (rounds * JOB_ERRORS_INTERVAL) if rounds else 0.0
    return {
        "targets (accounts x regions; Macie off)":
            f"{result.targets} ({fleet.accounts} x {fleet.regions}; {off * fleet.regions})",
        "exporter listening after, s": f"{result.started_after_s:.1f}",
        "/readyz 200 after, s (target <= 60)": _seconds(result.ready_s),
        "every target's refresh_success 1 on /metrics after, s": _seconds(result.served_s),
        "max threads (target <= 64)": f"{result.max_threads}",
        "max RSS, MB (target <= 300)": f"{result.max_rss_mb:.0f}",
        "first cycle CPU, s (from process start)": f"{first.cpu_s:.1f}",
        "CPU per steady cycle, s (target <= 20)":
            (f"{statistics.mean(steady_cpu):.1f} ({', '.join(f'{c:.1f}' for c in steady_cpu)})"
             if steady_cpu else "-"),
        "first cycle: List / Describe / GetMacieSession":
            f"{first_ops['ListClassificationJobs']} / {first_ops['DescribeClassificationJob']} "
            f"/ {first_ops['GetMacieSession']}",
        "first cycle: other operations": _others(first_ops),
        "steady cycles": f"{len(steady)} (cycles {result.steady_from}-{len(result.cycles)}; "
                         f"CPU of the start-up ones: {startup_cpu or '-'})",
        "targets with a RUNNING job / idle":
            f"{result.active} / {result.enabled - result.active}",
        "steady: List per cycle (want: active targets + idle ones / 5)":
            f"{steady_op('ListClassificationJobs')} (want {want_lists:.0f})",
        "steady: Describe per cycle (want: RUNNING jobs)":
            f"{steady_op('DescribeClassificationJob')} (want {result.running_jobs})",
        "steady: GetMacieSession per cycle (want about targets / 60, each at its phase)":
            f"{steady_op('GetMacieSession')} (want {result.targets * result.interval / 3600:.0f})",
        "steady: other operations, per cycle":
            "; ".join(_others(ops) for ops in steady_ops) or "-",
        "job errors: targets with an erroring job (FilterLogEvents want 12 an hour each)":
            f"{len(fleet.erroring_targets)}",
        "steady: FilterLogEvents per cycle (to targets without an erroring job, want 0)":
            "; ".join(f"{mine} ({others})" for mine, others in
                      (result.log_reads(c) for c in steady)) or "-",
        "steady: FilterLogEvents per hour, over whole 5-minute rounds":
            f"{log_reads_per_hour:.0f} ({log_reads} in {rounds} round(s))" if rounds else "-",
        "steady: requests to Macie-off targets (want: their hourly GetMacieSession only)":
            _same_or_range([result.off_requests(c) for c in steady]),
        "steady: enabled targets off their calls (active: 1 list + 1 describe; idle: <= 1 list)":
            _same_or_range([result.odd_targets(c) for c in steady]),
        "cycle cuts quiet (no request 2 s before)":
            f"{sum(c.quiet for c in result.cycles)} of {len(result.cycles)}",
        "AssumeRole, whole run (want: one per account)": (
            f"{result.assume_roles} of {fleet.accounts} accounts (per account: "
            f"{_same_or_range(sorted(per_account[a] for a in fleet.account_ids))})"),
        "scrapes before readiness (both kinds): n, max ms":
            (f"{len(result.early_scrapes)}, {max(result.early_scrapes) * 1000:.0f}"
             if result.early_scrapes else "0"),
        "scrape p50 / p99 / max from readiness on, ms (OpenMetrics gzip, every 15 s)":
            (f"{statistics.median(lat) * 1000:.1f} / {percentile(lat, 0.99) * 1000:.1f} / "
             f"{max(lat) * 1000:.1f} (n={len(lat)}, failed {result.scrape_failures})"
             if lat else "-"),
        "scrape p50 / max from readiness on, ms (plain text, no gzip)":
            (f"{statistics.median(result.text_latencies) * 1000:.0f} / "
             f"{max(result.text_latencies) * 1000:.0f} (n={len(result.text_latencies)})"
             if result.text_latencies else "-"),
        "exposition size, MB (OpenMetrics gzip / plain text)":
            f"{result.gzip_bytes / 1e6:.1f} / {result.text_bytes / 1e6:.1f}",
        "steady: Macie calls per cycle, and by the formula":
            f"{_same_or_range([result.macie_calls(c) for c in steady])} "
            f"(formula {sum(formula.values()):.0f}: "
            + ", ".join(f"{k} {v:.0f}" for k, v in formula.items() if v) + ")",
        "steady: Macie calls / formula (target <= 1.1)":
            ", ".join(f"{result.macie_calls(c) / sum(formula.values()):.2f}" for c in steady),
        "boto3's own CPU for a mean steady cycle's calls, s":
            (f"{result.reference_cpu_s:.1f} ({result.reference_calls} calls, 16 threads)"
             if result.reference_cpu_s is not None else "-"),
        "CPU per steady cycle / boto3's (target <= 1.6)":
            (f"{statistics.mean(steady_cpu) / result.reference_cpu_s:.2f}"
             if result.reference_cpu_s and steady_cpu else "-"),
        "probe: new job on an idle target on /metrics after, s (want <= idle + interval)":
            _seconds(result.new_job_seen - result.new_job_at
                     if result.new_job_seen and result.new_job_at else None),
        "probe: its objects to process on /metrics after, s (want <= interval)":
            _seconds(result.progress_seen - result.progress_at
                     if result.progress_seen and result.progress_at else None),
        "series on /metrics": f"{result.series}",
        "warn/error log lines": f"{len(result.log_warnings)}",
    }


def _others(operations: Counter[str]) -> str:
    """Operations beside the job ones (STS, collectors), or "none"."""
    found = [f"{op} {n}" for op, n in sorted(operations.items()) if op not in JOB_OPERATIONS]
    return ", ".join(found) or "none"


def _seconds(value: float | None) -> str:
    return "not reached" if value is None else f"{value:.1f}"


def raw(result: Run) -> dict[str, object]:
    """A run's measures as JSON values (--json), per cycle and per operation."""
    return {
        "accounts": result.fleet.accounts, "regions": result.fleet.regions,
        "targets": result.targets, "enabled": result.enabled,
        "started_after_s": result.started_after_s, "ready_s": result.ready_s,
        "served_s": result.served_s, "max_threads": result.max_threads,
        "max_rss_mb": result.max_rss_mb, "series": result.series,
        "assume_roles": result.assume_roles,
        "scrape_latencies_s": result.scrape_latencies,
        "scrape_failures": result.scrape_failures,
        "cycles": [{"number": c.number, "cpu_s": c.cpu_s, "quiet": c.quiet,
                    "operations": dict(result.by_operation(c)),
                    "off_requests": result.off_requests(c),
                    "odd_targets": result.odd_targets(c)} for c in result.cycles],
        "log_warnings": result.log_warnings,
    }


def print_table(results: list[Run]) -> None:
    tables = [rows(r) for r in results]
    keys = list(tables[0])
    width = max(len(k) for k in keys)
    heads = [f"{r.targets} targets" for r in results]
    print(f"| {'measure':<{width}} | " + " | ".join(heads) + " |")
    print(f"|{'-' * (width + 2)}|" + "|".join("-" * (len(h) + 2) for h in heads) + "|")
    for key in keys:
        print(f"| {key:<{width}} | " + " | ".join(t[key] for t in tables) + " |")
    for result in results:
        for line in result.log_warnings[:5]:
            print(f"{result.targets} targets: {line}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--accounts", type=int, default=200)
    parser.add_argument("--all", action="store_true", help="2, 20 and 200 accounts in a row")
    parser.add_argument("--regions", type=int, default=10)
    parser.add_argument("--cycles", type=int, default=4,
                        help="refresh cycles to run, the first included (at least 2)")
    parser.add_argument("--steady-from", type=int, default=2,
                        help="the first cycle counted as steady (after the start-up work: "
                             "the collectors' first rounds are spread over targets / 10 s)")
    parser.add_argument("--interval", type=float, default=60.0, help="--refresh.interval, s")
    parser.add_argument("--latency", type=float, default=0.005, help="seconds per AWS call")
    parser.add_argument("--jobs-per-target", type=int, default=3)
    parser.add_argument("--running-per-target", type=int, default=1)
    parser.add_argument("--off-every", type=int, default=10)
    parser.add_argument("--json", type=Path, help="also write every run's measures here")
    parser.add_argument("--erroring-every", type=int, default=0,
                        help="every Nth job had errors in its last run and logged them "
                             "(20: 5%% of jobs; 0: none)")
    parser.add_argument("--running-every", type=int, default=0,
                        help="one RUNNING job in every Nth target instead of "
                             "--running-per-target in each (20: 5%% of the targets)")
    parser.add_argument("--text-every", type=int, default=TEXT_EVERY,
                        help="one plain-text scrape per N OpenMetrics ones (0: none)")
    parser.add_argument("--probe", action="store_true",
                        help="a job created on an idle target after start-up, then its "
                             "progress: how soon /metrics shows each")
    parser.add_argument("--discovery", action="store_true",
                        help="the exporter discovers the accounts (ListAccounts) instead of "
                             "reading them from its config file")
    parser.add_argument("exporter_flags", nargs="*",
                        help="more exporter flags, after --, e.g. -- --refresh.concurrency=32")
    args = parser.parse_args()
    if args.cycles < 2:
        parser.error("--cycles: at least 2 (the first cycle, then steady ones)")
    if not 2 <= args.steady_from <= args.cycles:
        parser.error("--steady-from: a cycle from 2 to --cycles")
    sizes = [2, 20, 200] if args.all else [args.accounts]
    results = []
    for accounts in sizes:
        fleet = Fleet(accounts, args.regions, args.jobs_per_target, args.running_per_target,
                      args.off_every, args.discovery, args.erroring_every, args.running_every)
        results.append(run(fleet, args.cycles, args.interval, args.latency,
                           tuple(args.exporter_flags), probe=args.probe,
                           text_every=args.text_every, steady_from=args.steady_from))
        if args.json:
            args.json.write_text(json.dumps([raw(r) for r in results], indent=1))
    print_table(results)


if __name__ == "__main__":
    main()
