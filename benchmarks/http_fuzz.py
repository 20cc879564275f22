"""The HTTP front door under a fuzzer, and what a header can make a scrape cost.

    python -m benchmarks.http_fuzz                   # 20,000 mutated requests, TLS off then on
    python -m benchmarks.http_fuzz --requests 2000   # a quicker run
    python -m benchmarks.http_fuzz --cost            # CPU of 200 Accept/name[] variants vs 200
                                                     # plain scrapes, at 10,000 jobs

Fuzz: starts `python -m exporter --demo` on loopback at debug level, once without TLS and once
with a web config file (TLS and basic auth, bcrypt cost 10), and sends each half of the
requests over 50 connections at a time: requests made from a grammar, then mutated (bytes
flipped, control bytes inserted, heads cut short or repeated past 16 KiB, bad framing,
pipelining, random Accept, name[] and Authorization values). Meanwhile a normal scraper scrapes
/metrics every second as Prometheus does. Every answer is parsed by an h11 client. Reported:
5xx answers (501/505 apart, each checked to be for an unknown method or version), answers that
do not parse, tracebacks and error lines in the log, the exporter alive, the normal scrape's
latency, the exporter's threads.

Cost: the simulator with 10,000 jobs in one target, the exporter scraping nothing else
(refresh every hour, the other collectors off), measured once it is ready and its CPU at
rest; 200 plain scrapes (Prometheus' Accept, gzip)
and 200 requests each with an Accept variant or a name[] set not sent before, interleaved in
rounds of 20 on one keep-alive connection; the exporter's CPU (utime + stime) for each.
"""

from __future__ import annotations

import argparse
import base64
import ipaddress
import os
import random
import re
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import bcrypt
import h11
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

REPO = Path(__file__).resolve().parent.parent
PROMETHEUS_ACCEPT = ("application/openmetrics-text;version=1.0.0,application/openmetrics-text;"
                     "version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1")
PASSWORD = "fuzz-benchmark-password"  # noqa: S105 (the benchmark's own web config)
KNOWN_METHODS = {b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"CONNECT", b"OPTIONS",
                 b"TRACE", b"PATCH"}
# A request line, after the empty lines a server skips before one (RFC 9112 2.2).
REQUEST_LINE = re.compile(rb"(?:^|\n)[\r\n]*([^ \r\n]*) ([^ \r\n]*) HTTP/(\d\.\d)\r?(?=\n|$)")
FAMILIES = ["macie_classification_job_info", "macie_classification_job_status",
            "macie_classification_jobs", "macie_exporter_build_info",
            "macie_exporter_api_requests_total", "macie_exporter_refresh_success",
            "macie_usage_estimated_cost", "macie_status", "macie_member_relationship_status",
            "macie_exporter_http_requests_total", "nope", "", "%00", "%1b%5b2J"]


# ------------------------------------------------------------------ requests


def accept_value(rng: random.Random) -> bytes:
    kinds = ["application/openmetrics-text", "text/plain", "*/*", "application/json",
             "text/*", "APPLICATION/OPENMETRICS-TEXT", ""]
    parts = []
    for _ in range(rng.randint(1, 4)):
        params = [rng.choice(kinds)]
        if rng.random() < 0.7:
            params.append("version=" + rng.choice(["1.0.0", "0.0.1", "0.0.4", "abc", "",
                                                   f"1.0.{rng.randint(0, 10**6)}", "2.0.0",
                                                   "1" * rng.randint(1, 300)]))
        if rng.random() < 0.4:
            params.append("escaping=" + rng.choice(["allow-utf-8", "underscores", "dots",
                                                    "values", "x"]))
        if rng.random() < 0.4:
            params.append(f"q={rng.choice(['0', '0.5', '1', 'abc', '-1', '2', '1e9'])}")
        parts.append(";".join(params))
    return ",".join(parts).encode()


def target(rng: random.Random) -> bytes:
    path = rng.choice([b"/metrics", b"/metrics", b"/healthz", b"/readyz", b"/", b"/nope",
                       b"*", b"http://exporter/metrics", b"/%1b%0d%0aforged", b"/metrics/"])
    if path.startswith(b"/metrics") and rng.random() < 0.5:
        names = [rng.choice(FAMILIES) for _ in range(rng.randint(0, 6))]
        path += b"?" + b"&".join(b"name[]=" + n.encode() for n in names)
    return path


def authorization(rng: random.Random) -> bytes:
    choice = rng.random()
    if choice < 0.3:
        return b"Basic " + base64.b64encode(f"prometheus:{PASSWORD}".encode())
    if choice < 0.8:
        user = rng.choice(["prometheus", "admin", "", "x" * 100])
        password = "".join(rng.choice("abcdef0123\x00:") for _ in range(rng.randint(0, 90)))
        return b"Basic " + base64.b64encode(f"{user}:{password}".encode())
    return rng.choice([b"Basic !!!", b"Bearer x", b"Basic", b"basic cHJvbWV0aGV1cw=="])


def request(rng: random.Random) -> bytes:
    method = rng.choice([b"GET"] * 6 + [b"HEAD", b"POST", b"OPTIONS", b"BREW", b"get"])
    version = rng.choice([b"HTTP/1.1"] * 8 + [b"HTTP/1.0", b"HTTP/2.0", b"HTTP/1.7"])
    headers = [(b"Host", b"exporter")] if rng.random() < 0.95 else []
    if rng.random() < 0.03:
        headers.append((b"Host", b"other"))
    if rng.random() < 0.8:
        headers.append((b"Accept", accept_value(rng)))
    if rng.random() < 0.6:
        headers.append((b"Accept-Encoding", rng.choice([b"gzip", b"identity", b"gzip, br",
                                                        b"*"])))
    if rng.random() < 0.5:
        headers.append((b"Authorization", authorization(rng)))
    body = b""
    framing = rng.random()
    if framing < 0.05:
        headers.append((b"Content-Length", rng.choice([b"5", b"\xb2", b"-1", b"1, 2", b"99"])))
        body = b"hello"
    elif framing < 0.08:
        headers.append((b"Transfer-Encoding", rng.choice([b"chunked", b"gzip", b"chunked, x"])))
        body = rng.choice([b"5\r\nhello\r\n0\r\n\r\n", b"zz\r\n", b"0\r\n\r\n"])
    elif framing < 0.1:
        headers += [(b"Content-Length", b"3"), (b"Transfer-Encoding", b"chunked")]
    if rng.random() < 0.1:
        headers.append((b"Connection", rng.choice([b"close", b"keep-alive", b"upgrade"])))
    eol = b"\r\n" if rng.random() < 0.95 else b"\n"
    lines = [b" ".join((method, target(rng), version))]
    lines += [name + b": " + value for name, value in headers]
    return eol.join(lines) + eol + eol + body


def mutate(rng: random.Random, raw: bytes) -> bytes:
    data = bytearray(raw)
    for _ in range(rng.choice([0, 0, 1, 1, 2, 3, 5])):
        at = rng.randrange(max(1, len(data)))
        edit = rng.random()
        if edit < 0.25 and data:
            data[at] = rng.randrange(256)
        elif edit < 0.5:
            data[at:at] = rng.choice([b"\x00", b"\x1b", b"\r", b"\n", b"\x7f", b"\xff",
                                      b"\x1b[2J", b" ", b":", b"\r\n\r\n", b"\t"])
        elif edit < 0.6:
            del data[at:at + rng.randint(1, 12)]
        elif edit < 0.7:
            del data[at:]  # truncated
        elif edit < 0.8:
            data[at:at] = bytes(data[at:at + 40]) * rng.randint(2, 600)  # oversized
        else:
            data += request(rng)  # pipelined
    return bytes(data)


# ------------------------------------------------------------------ answers


def parse_one(received: bytes, method: bytes) -> tuple[h11.Response, bytes] | None:
    """The first response in `received` as an answer to `method`, and what follows it (also
    what tests/test_http_properties.py checks every answer with)."""
    client = h11.Connection(h11.CLIENT)
    client.send(h11.Request(method=method, target="/", headers=[("Host", "x")]))
    client.send(h11.EndOfMessage())
    client.receive_data(received)
    client.receive_data(b"")
    try:
        response = client.next_event()
        while not isinstance(client.next_event(), h11.EndOfMessage):
            pass
    except h11.RemoteProtocolError:
        return None
    if not isinstance(response, h11.Response):
        return None
    return response, client.trailing_data[0]


def responses(received: bytes) -> list[int] | None:
    """The status codes of the responses `received` is made of, each an answer to a GET or a
    HEAD (no body: the one whose rest is empty or the next response), None if it is not made
    of responses."""
    codes = []
    while received:
        for method in (b"GET", b"HEAD"):
            parsed = parse_one(received, method)
            if parsed is not None and (not parsed[1] or parsed[1].startswith(b"HTTP/1.1 ")):
                break
        else:
            return None
        codes.append(parsed[0].status_code)
        received = parsed[1]
    return codes


@dataclass
class Tally:
    lock: threading.Lock = field(default_factory=threading.Lock)
    sent: int = 0
    codes: Counter[int] = field(default_factory=Counter)
    unparsed: int = 0
    unparsed_samples: list[tuple[bytes, bytes]] = field(default_factory=list)
    fivexx: list[bytes] = field(default_factory=list)  # 5xx but a justified 501/505
    justified: int = 0  # 501 for an unknown method, 505 for another version
    no_answer: int = 0  # closed without an answer (a cut request, a silent drop)
    errors: int = 0  # connect or read failures


def judge(tally: Tally, raw: bytes, received: bytes) -> None:
    codes = responses(received)
    # The request lines (pipelined requests have several): a 501 or 505 must answer one.
    lines = REQUEST_LINE.findall(raw)
    with tally.lock:
        tally.sent += 1
        if codes is None:
            tally.unparsed += 1
            tally.unparsed_samples.append((raw[:300], received[:300] + b"..." + received[-100:]))
            return
        if not codes:
            tally.no_answer += 1
        for code in codes:
            tally.codes[code] += 1
            if code >= 500:
                if ((code == 505 and any(v not in (b"1.0", b"1.1") for _, _, v in lines))
                        or (code == 501 and any(m not in KNOWN_METHODS for m, _, _ in lines))):
                    tally.justified += 1
                else:
                    tally.fivexx.append(raw[:200])


# ------------------------------------------------------------------ the exporter


SOURCE = REPO  # the checkout the exporter runs from (--source)


def clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MACIE_EXPORTER_"))}
    env.update(AWS_ACCESS_KEY_ID="AKIABENCHMARK000001", AWS_SECRET_ACCESS_KEY="bench",
               AWS_DEFAULT_REGION="eu-west-1", AWS_EC2_METADATA_DISABLED="true",
               AWS_CONFIG_FILE="/nonexistent", AWS_SHARED_CREDENTIALS_FILE="/nonexistent",
               PYTHONPATH=str(SOURCE))
    return env


@dataclass
class Exporter:
    proc: subprocess.Popen[str]
    address: str
    lines: list[str]

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


def start(args: list[str], env: dict[str, str] | None = None) -> Exporter:
    proc = subprocess.Popen([sys.executable, "-m", "exporter", *args], env=env or clean_env(),
                            cwd=SOURCE, stderr=subprocess.PIPE, text=True, encoding="utf-8",
                            errors="surrogateescape")
    assert proc.stderr is not None
    stderr = proc.stderr
    lines: list[str] = []
    while line := stderr.readline():
        lines.append(line)
        match = re.search(r"msg=listening address=(\S+)", line)
        if match:
            def drain() -> None:
                for rest in stderr:
                    lines.append(rest)
            threading.Thread(target=drain, daemon=True).start()
            return Exporter(proc, match.group(1), lines)
    raise RuntimeError(f"exporter exited {proc.wait()}:\n{''.join(lines)}")


def threads(pid: int) -> int:
    match = re.search(r"^Threads:\s+(\d+)", Path(f"/proc/{pid}/status").read_text(), re.M)
    assert match
    return int(match.group(1))


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def certificate(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = time.time()
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(datetime.fromtimestamp(now - 60, UTC))
            .not_valid_after(datetime.fromtimestamp(now + 86400, UTC))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / "tls.crt", directory / "tls.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


# ------------------------------------------------------------------ fuzz


class Connector:
    def __init__(self, address: str, tls: ssl.SSLContext | None) -> None:
        host, _, port = address.rpartition(":")
        self.endpoint = (host, int(port))
        self.tls = tls

    def open(self, timeout: float) -> socket.socket:
        sock = socket.create_connection(self.endpoint, timeout=timeout)
        if self.tls is not None:
            return self.tls.wrap_socket(sock, server_hostname="127.0.0.1")
        return sock


def exchange(connector: Connector, raw: bytes, hold: bool) -> bytes:
    """Send `raw` and read to EOF; `hold`: do not shut our side (the server must drop us)."""
    with connector.open(timeout=20) as sock:
        sock.sendall(raw)
        if not hold:
            if isinstance(sock, ssl.SSLSocket):
                socket.socket.shutdown(sock, socket.SHUT_WR)
            else:
                sock.shutdown(socket.SHUT_WR)
        received = b""
        try:
            while data := sock.recv(1 << 20):
                received += data
        except (ConnectionResetError, ssl.SSLError):
            pass  # reset after a complete answer: judged on what came
        return received


def fuzzer(connector: Connector, rng: random.Random, count: int, tally: Tally) -> None:
    for _ in range(count):
        raw = request(rng)
        if rng.random() < 0.7:
            raw = mutate(rng, raw)
        hold = rng.random() < 0.005  # a half-open request: held until the server drops it
        if hold:
            raw = raw[:rng.randrange(1, max(2, len(raw) // 2))].replace(b"\r\n\r\n", b"\r\n")
        try:
            received = exchange(connector, raw, hold)
        except OSError:
            with tally.lock:
                tally.errors += 1
            continue
        judge(tally, raw, received)


def scraper(address: str, tls: ssl.SSLContext | None, auth: bool, stop: threading.Event,
            latencies: list[float], failures: list[str]) -> None:
    scheme = "https" if tls else "http"
    headers = {"Accept": PROMETHEUS_ACCEPT, "Accept-Encoding": "gzip"}
    if auth:
        headers["Authorization"] = "Basic " + base64.b64encode(
            f"prometheus:{PASSWORD}".encode()).decode()
    while not stop.is_set():
        began = time.perf_counter()
        try:
            with urllib.request.urlopen(urllib.request.Request(
                    f"{scheme}://{address}/metrics", headers=headers), timeout=10,
                    context=tls) as response:
                response.read()
            latencies.append(time.perf_counter() - began)
        except (OSError, urllib.error.URLError) as err:
            failures.append(str(err))
        stop.wait(max(0.0, 1.0 - (time.perf_counter() - began)))


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] if ordered else 0.0


def fuzz_phase(tls: bool, total: int, connections: int, seed: int,
               workdir: Path) -> list[tuple[str, str]]:
    args = ["--demo", "--web.listen-address=127.0.0.1:0", "--log.level=debug",
            "--refresh.interval=5s"]
    client_tls = None
    if tls:
        cert, key = certificate(workdir)
        config = workdir / "web.yml"
        config.write_text(yaml.safe_dump({
            "tls_server_config": {"cert_file": str(cert), "key_file": str(key)},
            "basic_auth_users": {"prometheus": bcrypt.hashpw(
                PASSWORD.encode(), bcrypt.gensalt(rounds=10)).decode()}}), encoding="utf-8")
        args.append(f"--web.config.file={config}")
        client_tls = ssl.create_default_context(cafile=str(cert))
    exporter = start(args)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(
                        f"{'https' if tls else 'http'}://{exporter.address}/readyz",
                        timeout=5, context=client_tls) as response:
                    if response.status == 200:
                        break
            except (OSError, urllib.error.URLError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("exporter not ready after 60 s")
            time.sleep(0.2)
        time.sleep(5)  # the demo's collectors start their threads after the first refresh
        before = threads(exporter.proc.pid)
        tally = Tally()
        stop = threading.Event()
        latencies: list[float] = []
        failures: list[str] = []
        normal = threading.Thread(target=scraper, args=(
            exporter.address, client_tls, tls, stop, latencies, failures), daemon=True)
        normal.start()
        connector = Connector(exporter.address, client_tls)
        share, extra = divmod(total, connections)
        workers = [threading.Thread(target=fuzzer, args=(
            connector, random.Random(seed * 1000 + n), share + (n < extra), tally), daemon=True)
            for n in range(connections)]
        began = time.monotonic()
        for worker in workers:
            worker.start()
        peak = before
        while any(worker.is_alive() for worker in workers):
            peak = max(peak, threads(exporter.proc.pid))
            time.sleep(0.2)
        elapsed = time.monotonic() - began
        stop.set()
        normal.join(15)
        time.sleep(1)
        after = threads(exporter.proc.pid)
        alive = exporter.proc.poll() is None
        log = "".join(exporter.lines)
    finally:
        exporter.stop()
    tracebacks = log.count("Traceback")
    errors = sum(1 for line in log.splitlines() if "level=error" in line)
    raw_controls = len(re.findall("[\x00-\x08\x0b-\x1f\x7f]", log))
    codes = ", ".join(f"{code}: {n}" for code, n in sorted(tally.codes.items()))
    name = "TLS + basic auth" if tls else "plain HTTP"
    rows = [
        (f"{name}: requests sent (over {connections} connections)",
         f"{tally.sent:,} in {elapsed:.0f} s ({tally.errors} connect/read errors)"),
        (f"{name}: answers by status", codes),
        (f"{name}: 5xx answers (target 0)", str(len(tally.fivexx))),
        (f"{name}: 501/505 for an unknown method/version", str(tally.justified)),
        (f"{name}: answers that do not parse (target 0)", str(tally.unparsed)),
        (f"{name}: closed without an answer (cut requests)", str(tally.no_answer)),
        (f"{name}: tracebacks / error lines / raw control bytes in the log (target 0)",
         f"{tracebacks} / {errors} / {raw_controls}"),
        (f"{name}: exporter alive at the end", "yes" if alive else "NO"),
        (f"{name}: normal scrape p50 / p99 / max (target p99 < 500 ms)",
         f"{statistics.median(latencies) * 1000:.1f} / {percentile(latencies, 0.99) * 1000:.1f}"
         f" / {max(latencies) * 1000:.1f} ms ({len(latencies)} scrapes, "
         f"{len(failures)} failed)" if latencies else f"none ({len(failures)} failed)"),
        (f"{name}: exporter threads before / peak / after", f"{before} / {peak} / {after}"),
    ]
    for sample in tally.fivexx[:3]:
        print(f"5xx for {sample!r}", file=sys.stderr)
    for sent, got in tally.unparsed_samples[:3]:
        print(f"unparsed answer {got!r} to {sent!r}", file=sys.stderr)
    return rows


# ------------------------------------------------------------------ cost


def variants(count: int, rng: random.Random) -> list[tuple[str, str]]:
    """(Accept, query) pairs, each different: half Accept variants, half name[] sets."""
    out: list[tuple[str, str]] = []
    seen: set[tuple[str, str]] = set()
    names = [n for n in FAMILIES if n and not n.startswith("%")]
    while len(out) < count:
        if len(out) % 2 == 0:
            pair = (accept_value(rng).decode() + f";x={len(out)}", "")
        else:
            chosen = [*rng.sample(names, rng.randint(1, 5)), f"macie_nope_{len(out)}"]
            pair = (PROMETHEUS_ACCEPT, "?" + "&".join(f"name[]={n}" for n in chosen))
        if pair not in seen:
            seen.add(pair)
            out.append(pair)
    return out


def cost(jobs: int, per_kind: int, round_size: int) -> list[tuple[str, str]]:
    import http.client

    from benchmarks.bench import env as bench_env
    from benchmarks.bench import simulator
    from exporter.collectors import REGISTRY

    off = [f"--no-collector.{c.name}" for c in REGISTRY if c.switch is not None]
    with simulator(jobs, 300, 0.0) as url:
        env = {**bench_env(url), "PYTHONPATH": str(SOURCE)}
        exporter = start([f"--aws.endpoint-url={url}", "--refresh.interval=1h",
                          "--aws.regions=eu-west-1", "--web.listen-address=127.0.0.1:0",
                          *off], env)
        try:
            host, _, port = exporter.address.rpartition(":")
            connection = http.client.HTTPConnection(host, int(port), timeout=60)

            def get(accept: str, query: str = "") -> int:
                connection.request("GET", f"/metrics{query}", headers={
                    "Accept": accept, "Accept-Encoding": "gzip"})
                response = connection.getresponse()
                body = response.read()
                assert response.status == 200, response.status
                return len(body)

            deadline = time.monotonic() + 600
            while True:
                with urllib.request.urlopen(f"http://{exporter.address}/metrics",
                                            timeout=60) as response:
                    text = response.read()
                if text.count(b"macie_classification_job_info{") >= jobs:
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError("the jobs did not appear within 600 s")
                time.sleep(1)
            # The first refresh's describes and the renders of the snapshots they make: let
            # them end (/readyz, then the CPU at rest), so only the scrapes are measured.
            while True:
                try:
                    with urllib.request.urlopen(f"http://{exporter.address}/readyz",
                                                timeout=60) as response:
                        if response.status == 200:
                            break
                except urllib.error.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError("not ready within 600 s")
                time.sleep(1)
            for _ in range(60):
                size = get(PROMETHEUS_ACCEPT)  # scraped, so the renderer keeps rendering
                before = cpu_seconds(exporter.proc.pid)
                time.sleep(2)
                if cpu_seconds(exporter.proc.pid) - before < 0.05:
                    break
            for _ in range(20):  # warm: the render for this snapshot is done and kept
                size = get(PROMETHEUS_ACCEPT)
            pairs = variants(per_kind, random.Random(19))
            plain_cpu = variant_cpu = 0.0
            plain_bytes = variant_bytes = 0
            for start_at in range(0, per_kind, round_size):
                began = cpu_seconds(exporter.proc.pid)
                for _ in range(min(round_size, per_kind - start_at)):
                    plain_bytes += get(PROMETHEUS_ACCEPT)
                middle = cpu_seconds(exporter.proc.pid)
                for accept, query in pairs[start_at:start_at + round_size]:
                    variant_bytes += get(accept, query)
                plain_cpu += middle - began
                variant_cpu += cpu_seconds(exporter.proc.pid) - middle
            connection.close()
        finally:
            exporter.stop()
    return [
        ("jobs", f"{jobs:,}"),
        ("plain scrape size, gzip", f"{size / 1e6:.2f} MB"),
        (f"{per_kind} plain scrapes: exporter CPU", f"{plain_cpu:.2f} s "
         f"({plain_bytes / 1e6:.0f} MB sent)"),
        (f"{per_kind} Accept variants / name[] sets, each new: exporter CPU",
         f"{variant_cpu:.2f} s ({variant_bytes / 1e6:.0f} MB sent)"),
        ("ratio (target <= 3)", f"{variant_cpu / max(plain_cpu, 0.01):.2f}"),
    ]


def print_table(title: str, rows: list[tuple[str, str]]) -> None:
    width = max(len(k) for k, _ in rows)
    print(f"\n{title}\n")
    print(f"| {'measure':<{width}} | value |")
    print(f"|{'-' * (width + 2)}|-------|")
    for key, value in rows:
        print(f"| {key:<{width}} | {value} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20_000,
                        help="mutated requests in all, half without TLS and half with")
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--seed", type=int, default=19)
    parser.add_argument("--cost", action="store_true",
                        help="only the cost of Accept variants and name[] sets")
    parser.add_argument("--jobs", type=int, default=10_000, help="with --cost")
    parser.add_argument("--scrapes", type=int, default=200, help="with --cost, of each kind")
    parser.add_argument("--source", type=Path, default=REPO,
                        help="the checkout to run the exporter from")
    args = parser.parse_args()
    global SOURCE
    SOURCE = args.source.resolve()
    if args.cost:
        print_table("Scrape cost of Accept variants and name[] sets",
                    cost(args.jobs, args.scrapes, 20))
        return 0
    rows: list[tuple[str, str]] = []
    with tempfile.TemporaryDirectory() as workdir:
        for tls in (False, True):
            rows += fuzz_phase(tls, args.requests // 2, args.connections, args.seed + tls,
                               Path(workdir))
    print_table("HTTP fuzz", rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
