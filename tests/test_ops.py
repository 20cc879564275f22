"""Operating the exporter, with the real process: process metrics, metric filters, shard
gauges, --config.check, several listen addresses and Prometheus' probe paths."""

from __future__ import annotations

import gzip
import re
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from exporter.cli import main
from tests.conftest import REPO, ExporterProcess, exporter_env, parse, value, wait_for
from tests.simfaults import FaultySimulator

Start = Callable[..., ExporterProcess]
OPENMETRICS = "application/openmetrics-text; version=1.0.0"
RUNTIME_FAMILIES = {"process_cpu_seconds_total", "process_resident_memory_bytes",
                    "process_virtual_memory_bytes", "process_open_fds", "process_max_fds",
                    "process_start_time_seconds", "python_info",
                    "python_gc_objects_collected_total", "python_gc_objects_uncollectable_total",
                    "python_gc_collections_total"}


def families(body: bytes) -> set[str]:
    return set(re.findall(r"^# TYPE (\S+) ", body.decode(), re.MULTILINE))


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "exporter", *args], cwd=REPO,
                          env=env or exporter_env(), capture_output=True, text=True,
                          timeout=60, check=False)


def test_process_metrics_are_served_in_every_format_and_printed_by_once(
        sim: FaultySimulator, start: Start) -> None:
    exporter = start()
    status, _, body = exporter.get()
    assert status == 200
    assert families(body) >= RUNTIME_FAMILIES
    samples = parse(body.decode())
    assert value(samples, "process_resident_memory_bytes") > 10_000_000  # type: ignore[operator]
    assert value(samples, "python_info", major="3") == 1
    assert value(samples, "process_start_time_seconds") > 1.7e9  # type: ignore[operator]

    _, headers, om = exporter.get(headers={"Accept": OPENMETRICS, "Accept-Encoding": "gzip"})
    assert headers["Content-Encoding"] == "gzip"
    om = gzip.decompress(om)
    assert {"process_cpu_seconds", "python_info", "python_gc_collections"} <= families(om)
    assert om.endswith(b"# EOF\n")
    _, headers, text = exporter.get(headers={"Accept-Encoding": "gzip"})
    assert families(gzip.decompress(text)) >= RUNTIME_FAMILIES

    once = run("--once", f"--aws.endpoint-url={sim.url}", env=exporter_env(sim))
    assert once.returncode == 0, once.stderr
    assert families(once.stdout.encode()) >= RUNTIME_FAMILIES


@pytest.mark.parametrize("how", ["flag", "env", "yaml"])
def test_disable_exporter_metrics_leaves_them_out(sim: FaultySimulator, start: Start,
                                                  tmp_path: Path, how: str) -> None:
    args: list[str] = []
    env = exporter_env(sim)
    if how == "flag":
        args = ["--web.disable-exporter-metrics"]
    elif how == "env":
        env["MACIE_EXPORTER_WEB_DISABLE_EXPORTER_METRICS"] = "true"
    else:
        config = tmp_path / "config.yml"
        config.write_text("web:\n  disable_exporter_metrics: true\n", encoding="utf-8")
        args = [f"--config.file={config}"]
    exporter = start(*args, env=env)
    for headers in ({}, {"Accept": OPENMETRICS}):
        body = exporter.get(headers=headers)[2]
        names = families(body)
        assert not [n for n in names if n.startswith(("process_", "python_"))], names
        assert "macie_exporter_build_info" in names  # the exporter's own metrics stay
    once = run("--once", f"--aws.endpoint-url={sim.url}", *args, env=env)
    assert once.returncode == 0, once.stderr
    assert not [n for n in families(once.stdout.encode()) if n.startswith("process_")]


def test_metric_filters_apply_to_every_family(sim: FaultySimulator, start: Start) -> None:
    from tests.test_process import healthy, seed

    seed(sim)
    filters = ["--metrics.allowlist=macie_classification_job_.*,macie_exporter_.*,process_.*",
               "--metrics.denylist=macie_classification_job_info,macie_exporter_api_requests,"
               "macie_exporter_http_.*,process_(open|max)_fds"]
    exporter = start(*filters)
    exporter.wait_metric(healthy)
    for headers in ({}, {"Accept": OPENMETRICS}, {"Accept-Encoding": "gzip"}):
        _, answer, body = exporter.get(headers=headers)
        if answer.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        names = {n.removesuffix("_total") for n in families(body)}
        text = body.decode()
        assert "macie_classification_job_runs" in names
        assert "macie_exporter_refresh_success" in names and "process_cpu_seconds" in names
        assert "macie_exporter_shards" in names
        for gone in ("macie_classification_job_info", "macie_classification_jobs",
                     "macie_exporter_api_requests", "macie_exporter_http_requests",
                     "process_open_fds", "python_info", "macie_status"):
            assert gone not in names, gone
            assert not re.search(rf"^(# (HELP|TYPE) )?{gone}(_total)?[ {{]", text,
                                 re.MULTILINE), gone
    once = run("--once", f"--aws.endpoint-url={sim.url}", *filters, env=exporter_env(sim))
    assert once.returncode == 0, once.stderr
    assert families(once.stdout.encode()) == families(exporter.get()[2])


@pytest.mark.parametrize(("args", "named"), [
    (["--metrics.allowlist=macie_(s3"], "--metrics.allowlist: invalid regular expression "
                                        "'macie_(s3'"),
    (["--metrics.denylist=ok_.*,*bad"], "--metrics.denylist: invalid regular expression '*bad'"),
])
def test_an_invalid_filter_expression_exits_2(args: list[str], named: str) -> None:
    result = run(*args, "--aws.regions=eu-west-1")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"macie-exporter: error: {named}"), lines
    assert not result.stdout


def test_shard_gauges(start: Start) -> None:
    samples = start("--shard.index=2", "--shard.total=5").scrape()
    assert value(samples, "macie_exporter_shard_index") == 2
    assert value(samples, "macie_exporter_shards") == 5
    unsharded = start().scrape()
    assert value(unsharded, "macie_exporter_shard_index") == 0
    assert value(unsharded, "macie_exporter_shards") == 1


def test_several_listen_addresses_serve_the_same(sim: FaultySimulator, start: Start) -> None:
    from tests.test_process import seed

    seed(sim)
    exporter = start("--web.listen-address=[::1]:0", "--web.listen-address=127.0.0.1:0")
    # The fixture's own 127.0.0.1:0 comes first, then the two added here.
    addresses: list[str] = []

    def listening() -> bool:
        addresses[:] = re.findall(r"msg=listening address=(\S+)", exporter.logs())
        return len(addresses) == 3

    wait_for(listening, what="three listening lines")
    assert addresses[1].startswith("[::1]:") and len(set(addresses)) == 3, addresses
    exporter.wait_metric(lambda s: value(s, "macie_exporter_refresh_success") == 1)
    for address in addresses:
        exporter.address = address
        for path in ("/healthz", "/-/healthy"):
            status, headers, body = exporter.get(path)
            assert (status, body, headers["Content-Type"]) == (
                200, b"ok\n", "text/plain; charset=utf-8"), (address, path)
        for path in ("/readyz", "/-/ready"):
            status, _, body = exporter.get(path)
            assert (status, body) == (200, b"ready\n"), (address, path)
        assert "macie_classification_job_info" in families(exporter.get()[2])
    samples = exporter.scrape()
    for handler in ("/-/healthy", "/-/ready", "/healthz", "/readyz"):
        counted = value(samples, "macie_exporter_http_requests_total", handler=handler,
                        code="200")
        assert counted == 3, handler


def test_the_probe_aliases_answer_503_like_readyz_before_the_first_refresh(
        sim: FaultySimulator, start: Start) -> None:
    sim.faults.latency = 1.5  # keep the first refresh's list in flight
    sim.faults.slow = {"ListClassificationJobs"}
    exporter = start("--refresh.interval=5s")
    readyz, ready = exporter.get("/readyz"), exporter.get("/-/ready")
    assert readyz[0] == ready[0] == 503
    assert readyz[2] == ready[2] and readyz[2].startswith(b"not ready: 0 of 1 targets")


def test_listen_addresses_from_the_env_var_and_a_bad_one_exits_2(sim: FaultySimulator,
                                                                 start: Start) -> None:
    env = exporter_env(sim, MACIE_EXPORTER_WEB_LISTEN_ADDRESS="127.0.0.1:0, [::1]:0")
    exporter = ExporterProcess([f"--aws.endpoint-url={sim.url}", "--log.level=debug"], env)
    try:
        exporter.wait_listening()
        wait_for(lambda: len(re.findall(r"msg=listening ", exporter.logs())) == 2,
                 what="two listening lines")
    finally:
        assert exporter.stop() == 0
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run("--aws.regions=eu-west-1", "--web.listen-address=127.0.0.1:0",
                     f"--web.listen-address=127.0.0.1:{port}")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith(
        f"macie-exporter: error: --web.listen-address: cannot listen on 127.0.0.1:{port}: ")


# --config.check


def test_config_check_says_ok_and_calls_nothing(sim: FaultySimulator, tmp_path: Path) -> None:
    web = tmp_path / "web.yml"
    web.write_text("http_server_config:\n  headers:\n    X-Frame-Options: deny\n",
                   encoding="utf-8")
    config = tmp_path / "config.yml"
    config.write_text("aws:\n  regions: [eu-west-1, us-east-1]\nmetrics:\n  denylist: [x]\n",
                      encoding="utf-8")
    with socket.socket() as taken:  # the listen address is busy: checking does not bind it
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run("--config.check", f"--config.file={config}", f"--web.config.file={web}",
                     f"--aws.endpoint-url={sim.url}", f"--web.listen-address=127.0.0.1:{port}",
                     env=exporter_env(sim, MACIE_EXPORTER_REFRESH_INTERVAL="2m"))
    assert (result.returncode, result.stdout, result.stderr) == (0, "config OK\n", "")
    assert not sim.requests  # no AWS call (STS included: it points at the simulator too)


@pytest.mark.parametrize(("args", "env", "yaml", "named"), [
    (["--refresh.interval=soon"], {}, None, "--refresh.interval: invalid duration 'soon'"),
    ([], {"MACIE_EXPORTER_SHARD_TOTAL": "0"}, None, "MACIE_EXPORTER_SHARD_TOTAL: expected"),
    ([], {}, "web:\n  listen_address: [':1', ':1']\n",
     "web.listen_address: address ':1' is given twice"),
    ([], {}, "metrics:\n  allowlist: '(('\n", "metrics.allowlist: invalid regular expression"),
    (["--web.config.file={web}"], {}, None,
     "--web.config.file: basic_auth_users.u: not a bcrypt hash"),
    (["--web.config.file=/no/such/web.yml"], {}, None,
     "--web.config.file: cannot read /no/such/web.yml"),
    (["--aws.regions="], {"AWS_DEFAULT_REGION": ""}, None,
     "--aws.regions: no region given and the AWS SDK has no default region"),
], ids=["flag", "env", "yaml-listen", "yaml-regex", "web-config", "web-config-missing",
        "no-region"])
def test_config_check_names_the_error_and_exits_2(tmp_path: Path, args: list[str],
                                                  env: dict[str, str], yaml: str | None,
                                                  named: str) -> None:
    web = tmp_path / "web.yml"
    web.write_text("basic_auth_users:\n  u: plaintext\n", encoding="utf-8")
    extra = [arg.replace("{web}", str(web)) for arg in args]
    if yaml is not None:
        config = tmp_path / "config.yml"
        config.write_text(yaml, encoding="utf-8")
        extra.append(f"--config.file={config}")
    result = run("--config.check", *extra, env=exporter_env(None, **env))
    assert result.returncode == 2, result.stdout
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("macie-exporter: error: ") and named in lines[0], lines[0]
    assert result.stdout == ""


def test_config_check_starts_no_thread(monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    before = set(threading.enumerate())
    assert main(["--config.check", "--demo"]) == 0
    assert set(threading.enumerate()) == before
    assert capsys.readouterr().out == "config OK\n"
