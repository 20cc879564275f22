"""The HTTP server under 1,000 half-open requests (slowloris): threads, scrape latency, drops.

    python -m benchmarks.http_bounds                 # 1,000 half-open requests, 50 scrapes
    python -m benchmarks.http_bounds --source DIR    # the same against another checkout

Starts `python -m exporter --demo` on loopback, waits for /readyz, scrapes it as Prometheus does
(a new connection each time, OpenMetrics, gzip) 50 times, then opens the half-open requests
(a request line and one header, never the blank line that ends the head) and scrapes 50 times
more while they are held. Every half-open socket is watched for the server's close.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import select
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
ACCEPT = ("application/openmetrics-text;version=1.0.0,application/openmetrics-text;"
          "version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1")


def start(source: Path) -> tuple[subprocess.Popen[str], str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MACIE_EXPORTER_"))}
    env.update(AWS_ACCESS_KEY_ID="AKIABENCHMARK000001", AWS_SECRET_ACCESS_KEY="bench",
               AWS_DEFAULT_REGION="eu-west-1", AWS_EC2_METADATA_DISABLED="true",
               AWS_CONFIG_FILE="/nonexistent", AWS_SHARED_CREDENTIALS_FILE="/nonexistent",
               PYTHONPATH=str(source))
    proc = subprocess.Popen([sys.executable, "-m", "exporter", "--demo",
                             "--web.listen-address=127.0.0.1:0"],
                            env=env, cwd=source, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    while line := proc.stderr.readline():
        match = re.search(r"msg=listening address=(\S+)", line)
        if match:
            threading.Thread(target=proc.stderr.read, daemon=True).start()  # never block it
            return proc, match.group(1)
    raise RuntimeError(f"exporter exited {proc.wait()}")


def threads(pid: int) -> int:
    match = re.search(r"^Threads:\s+(\d+)", Path(f"/proc/{pid}/status").read_text(), re.M)
    assert match
    return int(match.group(1))


def scrape(address: str, timeout: float) -> float:
    """Seconds for one scrape; inf when it fails or times out."""
    request = urllib.request.Request(f"http://{address}/metrics",
                                     headers={"Accept": ACCEPT, "Accept-Encoding": "gzip"})
    began = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            response.read()
    except (OSError, urllib.error.URLError):
        return float("inf")
    return time.perf_counter() - began


def ready(address: str) -> bool:
    try:
        with urllib.request.urlopen(f"http://{address}/readyz", timeout=5) as response:
            return bool(response.status == 200)
    except (OSError, urllib.error.URLError):  # HTTPError (503) included
        return False


def scrapes(address: str, count: int, timeout: float) -> list[float]:
    return [scrape(address, timeout) for _ in range(count)]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def ms(value: float) -> str:
    return "failed" if value == float("inf") else f"{value * 1000:.1f} ms"


def watch_drops(sockets: list[socket.socket], sent: dict[int, float],
                dropped: dict[int, float], until: float) -> None:
    """Record when each socket is closed by the server (readable: EOF or reset)."""
    poller = select.poll()
    for sock in sockets:
        poller.register(sock, select.POLLIN | select.POLLHUP | select.POLLERR)
    while len(dropped) < len(sockets) and time.monotonic() < until:
        for fd, _ in poller.poll(100):
            if fd not in dropped:
                dropped[fd] = time.monotonic() - sent[fd]
                poller.unregister(fd)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=1000)
    parser.add_argument("--scrapes", type=int, default=50)
    parser.add_argument("--timeout", type=float, default=5.0, help="per scrape (s)")
    parser.add_argument("--wait", type=float, default=30.0,
                        help="how long to wait for the server to drop the half-open requests (s)")
    parser.add_argument("--source", type=Path, default=REPO,
                        help="the checkout to run the exporter from")
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = args.connections + 256
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, hard), hard))

    proc, address = start(args.source.resolve())
    rows: list[tuple[str, str]] = []
    attackers: list[socket.socket] = []
    try:
        deadline = time.monotonic() + 60
        while not ready(address):
            if time.monotonic() > deadline:
                raise RuntimeError("exporter not ready after 60 s")
            time.sleep(0.2)
        before = threads(proc.pid)
        baseline = scrapes(address, args.scrapes, args.timeout)

        host, _, port = address.rpartition(":")
        sent: dict[int, float] = {}
        opened_at = time.monotonic()
        for n in range(args.connections):
            try:
                sock = socket.create_connection((host, int(port)), timeout=5)
                sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: exporter\r\nX-Slow: " + b"a" * n)
            except OSError as err:
                print(f"half-open request {n} failed: {err}", file=sys.stderr)
                break
            attackers.append(sock)
            sent[sock.fileno()] = time.monotonic()
        opening = time.monotonic() - opened_at
        dropped: dict[int, float] = {}
        watcher = threading.Thread(target=watch_drops, daemon=True, args=(
            attackers, sent, dropped, time.monotonic() + args.wait))
        watcher.start()
        under_attack = threads(proc.pid)
        peak = under_attack
        attacked: list[float] = []
        for _ in range(args.scrapes):
            attacked.append(scrape(address, args.timeout))
            peak = max(peak, threads(proc.pid))
        early = len(dropped)
        watcher.join(args.wait + 5)
        after = threads(proc.pid)
        times = sorted(dropped.values())

        rows += [
            ("exporter threads before", str(before)),
            (f"threads with {len(attackers):,} half-open requests", f"{under_attack} "
             f"(+{under_attack - before}; peak during the scrapes {peak})"),
            ("threads after they were dropped", str(after)),
            (f"time to open the {len(attackers):,} half-open requests", f"{opening:.2f} s"),
            (f"scrape p50 / p99 / max, idle ({args.scrapes})",
             f"{ms(statistics.median(baseline))} / {ms(percentile(baseline, 0.99))} / "
             f"{ms(max(baseline))}"),
            (f"scrape p50 / p99 / max, under attack ({args.scrapes})",
             f"{ms(statistics.median(attacked))} / {ms(percentile(attacked, 0.99))} / "
             f"{ms(max(attacked))}"),
            ("scrapes failed under attack", f"{sum(t == float('inf') for t in attacked)} of "
                                            f"{len(attacked)}"),
            ("half-open requests dropped while the scrapes ran", str(early)),
            (f"dropped within {args.wait:g} s", f"{len(times)} of {len(attackers)}"),
        ]
        if times:
            rows.append(("time until dropped, min / median / max",
                         f"{times[0]:.2f} / {statistics.median(times):.2f} / "
                         f"{times[-1]:.2f} s"))
    finally:
        for sock in attackers:
            sock.close()
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
    width = max(len(name) for name, _ in rows)
    print(f"\nHTTP bounds: exporter --demo at {address} (source {args.source})\n")
    for name, value in rows:
        print(f"  {name:<{width}}  {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
