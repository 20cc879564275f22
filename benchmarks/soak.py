"""Load and soak: concurrent scrapers during refreshes, and resources over many refreshes.

    python -m benchmarks.soak                       # 50 scrapers for 60 s, then 1,000 refreshes
    python -m benchmarks.soak --refreshes 100       # a quicker soak

The real exporter process runs against the simulator (its own process) with 1,000 jobs and a
1 s refresh interval. Prints a table: failed scrapes, scrape p50/p99 during refreshes, and RSS,
threads and open files at the start and the end of the soak.
"""

from __future__ import annotations

import argparse
import re
import signal
import statistics
import threading
import time
from pathlib import Path

from benchmarks.bench import (
    percentile,
    print_table,
    refreshes_done,
    rss_mb,
    scrape,
    simulator,
    start_exporter,
)
from exporter.collectors.jobs import LIST_PAGE_SIZE


def resources(pid: int) -> tuple[float, int, int]:
    """(RSS MB, threads, open files) of a process."""
    status = Path(f"/proc/{pid}/status").read_text()
    threads = int(re.search(r"Threads:\s+(\d+)", status).group(1))  # type: ignore[union-attr]
    return rss_mb(pid), threads, len(list(Path(f"/proc/{pid}/fd").iterdir()))


def load(address: str, scrapers: int, seconds: float) -> dict[str, float]:
    latencies: list[float] = []
    failures: list[str] = []
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def worker() -> None:
        while time.monotonic() < deadline:
            began = time.perf_counter()
            try:
                body = scrape(address)
                assert body.endswith(b"# EOF\n")
            except Exception as err:
                with lock:
                    failures.append(repr(err))
                continue
            with lock:
                latencies.append(time.perf_counter() - began)

    threads = [threading.Thread(target=worker) for _ in range(scrapers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return {"scrapes": len(latencies), "failed": len(failures),
            "p50_ms": statistics.median(latencies) * 1000,
            "p99_ms": percentile(latencies, 0.99) * 1000}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--active", type=int, default=100)
    parser.add_argument("--scrapers", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--refreshes", type=int, default=1000)
    args = parser.parse_args()
    pages = max(1, -(-args.jobs // LIST_PAGE_SIZE))
    with simulator(args.jobs, args.active, 0.0) as url:
        proc, address = start_exporter(url)
        try:
            while refreshes_done(address, pages) < 3:
                time.sleep(0.5)
            scraped = load(address, args.scrapers, args.seconds)
            start_done = refreshes_done(address, pages)
            first = resources(proc.pid)
            while refreshes_done(address, pages) < start_done + args.refreshes:
                time.sleep(5)
            last = resources(proc.pid)
            done = refreshes_done(address, pages) - start_done
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(15)
    rows = [
        ("jobs", f"{args.jobs} ({args.active} non-terminal)"),
        (f"scrapes by {args.scrapers} concurrent scrapers in {args.seconds:.0f} s",
         f"{scraped['scrapes']:.0f}"),
        ("failed scrapes", f"{scraped['failed']:.0f}"),
        ("scrape p50 / p99, ms", f"{scraped['p50_ms']:.1f} / {scraped['p99_ms']:.1f}"),
        ("refreshes in the soak", f"{done}"),
        ("RSS MB, start -> end", f"{first[0]:.0f} -> {last[0]:.0f} "
                                 f"({(last[0] - first[0]) / first[0] * 100:+.1f}%)"),
        ("threads, start -> end", f"{first[1]} -> {last[1]}"),
        ("open files, start -> end", f"{first[2]} -> {last[2]}"),
    ]
    print_table(rows)


if __name__ == "__main__":
    main()
