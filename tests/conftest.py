"""Fixtures: a simulator on loopback, and the real exporter process pointed at it."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol

import pytest
from prometheus_client.parser import text_string_to_metric_families

from exporter.demo.simulator import Simulator
from exporter.engine.pool import CallPool
from tests.motoserver import Moto
from tests.simfaults import FaultySimulator


class ProcessExited(Exception):
    """The exporter process ended while a test waited on it."""


REPO = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def wait_for(condition: Callable[[], object], timeout: float = 15.0,
             what: str = "condition") -> object:
    """Poll `condition` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = condition()
        except (OSError, AssertionError, KeyError) as err:
            last_error, value = err, None
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last_error})")


def parse(text: str) -> Samples:
    """Exposition text → {(name, labels): value}."""
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float | None:
    """The one sample of `name` whose labels include `labels`, else None."""
    wanted = set(labels.items())
    found = [v for (n, ls), v in samples.items() if n == name and wanted <= ls]
    assert len(found) <= 1, f"{name}{labels} matches {len(found)} series"
    return found[0] if found else None


def series(samples: Samples, name: str, **labels: str) -> list[dict[str, str]]:
    wanted = set(labels.items())
    return [dict(ls) for (n, ls), _ in samples.items() if n == name and wanted <= ls]


def require_tool(name: str) -> str:
    """The path of a required external tool; a missing tool fails the test (never skips)."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"required tool {name!r} is not installed (see .ci/run)")
    return path


def venv_tool(name: str) -> str:
    """A tool installed by a PyPI package into this interpreter's bin/, else from PATH."""
    search = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    path = shutil.which(name, path=search)
    if path is None:
        pytest.fail(f"required tool {name!r} is not installed (pip install -e '.[test]')")
    return path


@pytest.fixture
def pool() -> Iterator[CallPool]:
    """A started call pool of four workers for refreshers over the small fakes."""
    pool = CallPool(4)
    pool.start()
    yield pool
    pool.stop()


@pytest.fixture
def sim() -> Iterator[FaultySimulator]:
    simulator = FaultySimulator()
    simulator.start()
    yield simulator
    simulator.stop()


class ExporterProcess:
    """`python -m exporter` as a child process; stderr (logs) collected line by line."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "exporter", *args], env=env, cwd=REPO,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, encoding="utf-8",
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.address = ""

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))

    def logs(self) -> str:
        return "\n".join(self.lines)

    def wait_listening(self) -> None:
        def listening() -> str | None:
            if self.proc.poll() is not None:
                raise ProcessExited(f"exporter exited {self.proc.returncode}:\n{self.logs()}")
            for line in list(self.lines):
                if line.startswith("{") and json.loads(line).get("msg") == "listening":
                    return str(json.loads(line)["address"])
                match = re.search(r"msg=listening address=(\S+)", line)
                if match:
                    return match.group(1)
            return None

        self.address = str(wait_for(listening, what="the exporter to listen"))

    def get(self, path: str = "/metrics", headers: dict[str, str] | None = None,
            ) -> tuple[int, dict[str, str], bytes]:
        request = urllib.request.Request(f"http://{self.address}{path}", headers=headers or {})
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, dict(response.headers), response.read()
        except urllib.error.HTTPError as err:
            return err.code, dict(err.headers), err.read()

    def scrape(self) -> Samples:
        status, _, body = self.get()
        assert status == 200
        return parse(body.decode())

    def wait_metric(self, check: Callable[[Samples], object], timeout: float = 15.0,
                    what: str = "metrics") -> Samples:
        holder: list[Samples] = []

        def attempt() -> bool:
            samples = self.scrape()
            holder[:] = [samples]
            return bool(check(samples))

        wait_for(attempt, timeout, what)
        return holder[0]

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                # PYTHONFAULTHANDLER (exporter_env) prints every thread's stack on SIGABRT.
                self.proc.send_signal(signal.SIGABRT)
                try:
                    self.proc.wait(5)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(5)
                self._reader.join(5)
                raise AssertionError(f"the exporter did not stop within {timeout:g}s of "
                                     f"{signal.Signals(sig).name}:\n{self.logs()}") from None
        self._reader.join(5)
        return self.proc.returncode


def stop_all(processes: list[ExporterProcess]) -> None:
    """Stop every process, then report the first that would not stop."""
    failures: list[AssertionError] = []
    for process in processes:
        try:
            process.stop()
        except AssertionError as err:
            failures.append(err)
    if failures:
        raise failures[0]


def exporter_env(sim: Simulator | None = None, **extra: str) -> dict[str, str]:
    """A clean environment: fake credentials, and STS and CloudWatch Logs pointed at the
    simulator (so that no test reaches AWS)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AWS_", "MACIE_EXPORTER_"))}
    env.update(AWS_ACCESS_KEY_ID="AKIATESTEXAMPLE00001", AWS_SECRET_ACCESS_KEY="test-secret",
               AWS_DEFAULT_REGION="eu-west-1", AWS_EC2_METADATA_DISABLED="true",
               AWS_CONFIG_FILE="/nonexistent", AWS_SHARED_CREDENTIALS_FILE="/nonexistent",
               PYTHONUNBUFFERED="1", PYTHONFAULTHANDLER="1")
    if sim is not None:
        env["AWS_ENDPOINT_URL_STS"] = env["AWS_ENDPOINT_URL_CLOUDWATCH_LOGS"] = sim.url
    env.update(extra)
    return env


@pytest.fixture
def start(sim: Simulator) -> Iterator[Callable[..., ExporterProcess]]:
    """Start the exporter against `sim`; every process is stopped at teardown."""
    started: list[ExporterProcess] = []

    def launch(*args: str, wait: bool = True, env: dict[str, str] | None = None,
              ) -> ExporterProcess:
        base = ["--web.listen-address=127.0.0.1:0", f"--aws.endpoint-url={sim.url}",
                "--refresh.interval=1s", "--aws.max-attempts=3", "--log.level=debug"]
        process = ExporterProcess([*base, *args], env or exporter_env(sim))
        started.append(process)
        if wait:
            process.wait_listening()
        return process

    yield launch
    stop_all(started)


@pytest.fixture
def demo_exporter() -> Iterator[ExporterProcess]:
    """The exporter in --demo mode (its own simulator), refreshing every second."""
    process = ExporterProcess(["--demo", "--web.listen-address=127.0.0.1:0",
                               "--refresh.interval=1s", "--jobs.tag-labels=team,environment"],
                              exporter_env())
    process.wait_listening()
    yield process
    process.stop()


class Stoppable(Protocol):
    def stop(self) -> None: ...


@pytest.fixture
def processes() -> Iterator[list[Stoppable]]:
    """Append started helper processes (Prometheus, Alertmanager); stopped at teardown."""
    started: list[Stoppable] = []
    yield started
    for process in reversed(started):
        process.stop()


@pytest.fixture
def moto() -> Iterator[Moto]:
    """moto's server on loopback, empty; stopped at teardown."""
    server = Moto()
    server.start()
    # moto keeps its state per process: start every test from an empty account.
    server.post("/moto-api/reset")
    try:
        yield server
    finally:
        # IAM checks are process-wide in moto (tests/test_job_errors_live.py turns them on);
        # a test may have left the server stopped.
        with contextlib.suppress(OSError):
            server.post("/moto-api/reset-auth", b"inf")
        server.stop()
