"""Buckets benchmark: an administrator with 50 members and 10,000 S3 buckets.

    python -m benchmarks.buckets                      # 10,000 buckets, 50 members, 3 rounds
    python -m benchmarks.buckets --buckets 2000 --rounds 2

The simulator runs in its own process (5 ms per call); the real exporter polls the
administrator's one target with every collector on, the buckets and automated-discovery
collectors every --round seconds. Measured per round: the calls (from the simulator's counts),
the collector's duration (its own self-metric), RSS and CPU of the exporter process; then the
series on /metrics and the scrape cost (OpenMetrics with gzip, as Prometheus asks, and plain
text), and the same with --buckets.only=public,error,sensitive,findings.
"""

from __future__ import annotations

import argparse
import gzip
import re
import time
import urllib.request
from collections import Counter
from typing import Any

from benchmarks.bench import (
    PROMETHEUS_ACCEPT,
    percentile,
    print_table,
    rss_mb,
    simulator_process,
    start_exporter,
)
from benchmarks.fleet import cpu_seconds
from benchmarks.fleets import request_counts

REGION = "eu-west-1"
OPERATIONS = ("DescribeBuckets", "GetFindingStatistics", "GetAutomatedDiscoveryConfiguration",
              "ListAutomatedDiscoveryAccounts")


def metrics(address: str, accept: str, gzipped: bool) -> tuple[bytes, float]:
    """(the decompressed body, seconds the scrape took)."""
    headers = {"Accept": accept}
    if gzipped:
        headers["Accept-Encoding"] = "gzip"
    began = time.monotonic()
    with urllib.request.urlopen(urllib.request.Request(
            f"http://{address}/metrics", headers=headers), timeout=30) as response:
        body = bytes(response.read())
    took = time.monotonic() - began
    return (gzip.decompress(body) if gzipped else body), took


def value(body: bytes, name: str, **labels: str) -> float | None:
    for line in body.decode().splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return None


def operations(url: str) -> Counter[str]:
    counts: dict[str, Any] = request_counts(url)
    return Counter({k: int(v) for k, v in counts["operations"].items()})


def run(buckets: int, members: int, rounds: int, round_seconds: int, latency: float,
        only: str | None) -> list[tuple[str, str]]:
    flags = [f"--collector.buckets.interval={round_seconds}s",
             f"--collector.automated-discovery.interval={round_seconds}s",
             "--refresh.interval=60s"]
    if only:
        flags.append(f"--buckets.only={only}")
    rows: list[tuple[str, str]] = [("buckets / members", f"{buckets} / {members}"),
                                   ("--buckets.only", only or "(every bucket)")]
    with simulator_process("--buckets", str(buckets), "--members", str(members),
                           "--latency", str(latency)) as url:
        proc, address = start_exporter(url, *flags, interval="60s", regions=REGION)
        try:
            began = time.monotonic()
            durations, calls, cpu = [], [], []
            seen = -1.0
            # Counted from one round's end to the next's (the second round can come early:
            # the collectors' first rounds are spread over their interval).
            before, cpu_before = operations(url), cpu_seconds(proc.pid)
            for number in range(rounds):
                deadline = time.monotonic() + round_seconds + 300
                while time.monotonic() < deadline:  # the round's health, once it changed
                    body, _ = metrics(address, PROMETHEUS_ACCEPT, True)
                    duration = value(body, "macie_exporter_collector_duration_seconds",
                                     collector="buckets")
                    success = value(body, "macie_exporter_collector_success",
                                    collector="buckets")
                    if duration is not None and success == 1 and duration != seen:
                        break
                    time.sleep(0.5)
                else:
                    raise RuntimeError("no buckets round")
                seen = duration
                durations.append(duration)
                after, cpu_after = operations(url), cpu_seconds(proc.pid)
                calls.append({op: after[op] - before[op] for op in OPERATIONS})
                cpu.append(cpu_after - cpu_before)
                before, cpu_before = after, cpu_after
                if number == 0:
                    rows.append(("first round done after start, s",
                                 f"{time.monotonic() - began:.1f}"))
            rows.append(("buckets collector round, s (each round)",
                         ", ".join(f"{d:.1f}" for d in durations)))
            for op in OPERATIONS:
                both = " (both collectors)" if op == "GetFindingStatistics" else ""
                rows.append((f"{op} per round{both}", ", ".join(str(c[op]) for c in calls)))
            rows.append(("exporter CPU per round (whole process), s",
                         ", ".join(f"{c:.1f}" for c in cpu)))
            rows.append(("RSS, MB", f"{rss_mb(proc.pid):.0f}"))
            body, _ = metrics(address, "text/plain", False)
            text = body.decode()
            bucket_series = sum(1 for line in text.splitlines()
                                if line.startswith("macie_s3_bucket_"))
            rows.append(("series on /metrics (macie_s3_bucket_*)",
                         f"{sum(1 for line in text.splitlines() if line and line[0] != '#')}"
                         f" ({bucket_series})"))
            rows.append(("exposition size, MB", f"{len(body) / 2**20:.1f}"))
            for label, accept, gzipped in (("OpenMetrics gzip", PROMETHEUS_ACCEPT, True),
                                           ("text", "text/plain", False)):
                took = [metrics(address, accept, gzipped)[1] * 1000 for _ in range(30)]
                rows.append((f"scrape p50 / p99 {label}, ms",
                             f"{percentile(took, 50):.1f} / {percentile(took, 99):.1f}"))
            shown = re.findall(r'^macie_s3_bucket_info\{[^}]*bucket="([^"]+)"', text, re.M)
            rows.append(("buckets shown (each once)", f"{len(shown)} ({len(set(shown))} distinct)"))
        finally:
            proc.terminate()
            proc.wait(20)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--buckets", type=int, default=10_000)
    parser.add_argument("--members", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--round", type=int, default=120, help="seconds between rounds")
    parser.add_argument("--latency", type=float, default=0.005)
    args = parser.parse_args()
    print_table(run(args.buckets, args.members, args.rounds, args.round, args.latency, None))
    print_table(run(args.buckets, args.members, 1, args.round, args.latency,
                    "public,error,sensitive,findings"))


if __name__ == "__main__":
    main()
