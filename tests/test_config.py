"""Configuration: YAML fixtures (each bad one names its expected error), env, flags, CLI exit 2."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from exporter.cli import main
from exporter.config import OPTIONS, ConfigError, load, parse_address, parse_duration
from exporter.model import DiscoveryConfig, OrganizationsConfig, TargetConfig
from exporter.web.webconfig import WebConfigError, load_web_config
from tests.conftest import FIXTURES, REPO, exporter_env

CONFIGS = FIXTURES / "config"


def expected_error(path: Path) -> str:
    first = path.read_text(encoding="utf-8").splitlines()[0]
    assert first.startswith("# error: "), f"{path.name} must start with '# error: <message>'"
    return first.removeprefix("# error: ")


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.bad.yaml")), ids=lambda p: p.stem)
def test_bad_config_files_name_the_problem(path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load([f"--config.file={path}"], environ={})
    message = str(caught.value)
    assert expected_error(path) in message
    assert str(path) in message


def test_full_config_file() -> None:
    config = load([f"--config.file={CONFIGS / 'full.ok.yaml'}"], environ={})
    assert (config.listen_host, config.listen_port) == ("127.0.0.1", 9800)
    assert config.telemetry_path == "/macie"
    assert config.endpoint_url == "https://macie2.eu-west-1.amazonaws.com"
    assert (config.retry_mode, config.max_attempts) == ("adaptive", 8)
    assert (config.connect_timeout, config.read_timeout) == (2, 10)
    assert (config.refresh_interval, config.concurrency) == (120, 16)
    assert config.full_redescribe_interval == 12 * 3600
    assert config.tag_keys == ("team", "cost-center")
    assert (config.log_level, config.log_format) == ("debug", "json")
    role = "arn:aws:iam::210987654321:role/macie-exporter"
    assert config.targets == (
        TargetConfig("eu-central-1"),
        TargetConfig("eu-west-1", role, "shared-secret-id"),
        TargetConfig("us-east-1", role, "shared-secret-id"),
    )
    assert config.list_filter == {
        "includes": [{"key": "jobType", "comparator": "EQ", "values": ["ONE_TIME", "SCHEDULED"]}],
        "excludes": [{"key": "name", "comparator": "STARTS_WITH", "values": ["tmp-"]}],
    }


def test_defaults() -> None:
    config = load([], environ={})
    assert (config.listen_host, config.listen_port) == ("", 9729)
    assert config.telemetry_path == "/metrics"
    assert config.targets == (TargetConfig(None),)
    assert (config.refresh_interval, config.concurrency, config.max_attempts) == (60, 16, 5)
    assert (config.status_interval, config.requests_per_second) == (3600, 0)
    assert (config.connect_timeout, config.read_timeout) == (5, 20)
    assert (config.retry_mode, config.log_level, config.log_format) == ("standard", "info",
                                                                         "logfmt")
    assert not config.demo and not config.once
    assert config.list_filter is None
    assert load([f"--config.file={CONFIGS / 'empty.ok.yaml'}"], environ={}) == config


def test_discovery_section() -> None:
    config = load([f"--config.file={CONFIGS / 'discovery.ok.yaml'}"], environ={})
    assert config.discovery == DiscoveryConfig(7200, OrganizationsConfig(
        member_role_name="macie-exporter",
        role_arn="arn:aws:iam::111111111111:role/macie-exporter-discovery",
        external_id="example", member_external_id="member-example",
        exclude_accounts=frozenset({"222222222222", "333333333333"})))
    assert config.regions == ("all",)
    assert config.targets == ()  # discovery alone: no implied target of the own account


def test_shards() -> None:
    config = load(["--shard.index=2", "--shard.total=3"], environ={})
    assert (config.shard_index, config.shard_total) == (2, 3)
    with pytest.raises(ConfigError, match=r"--shard.index: 3 is not below --shard.total \(3\)"):
        load(["--shard.index=3", "--shard.total=3"], environ={})
    with pytest.raises(ConfigError, match=r"--shard\.total: expected a whole number from 1"):
        load(["--shard.total=0"], environ={})


def test_precedence_flag_over_env_over_file() -> None:
    path = str(CONFIGS / "full.ok.yaml")
    assert load([f"--config.file={path}"], environ={}).concurrency == 16
    env = {"MACIE_EXPORTER_REFRESH_CONCURRENCY": "4", "MACIE_EXPORTER_CONFIG_FILE": path}
    assert load([], environ=env).concurrency == 4
    assert load(["--refresh.concurrency=2"], environ=env).concurrency == 2


def test_every_flag_has_an_env_var() -> None:
    env = {o.env: "x" for o in OPTIONS}
    assert "MACIE_EXPORTER_WEB_LISTEN_ADDRESS" in env
    assert "MACIE_EXPORTER_REFRESH_FULL_REDESCRIBE_INTERVAL" in env
    assert load([], environ={"MACIE_EXPORTER_DEMO": "true", "MACIE_EXPORTER_AWS_REGIONS":
                             "eu-west-1,us-east-2"}).demo
    config = load([], environ={"MACIE_EXPORTER_AWS_REGIONS": "eu-west-1, us-east-2"})
    assert [t.region for t in config.targets] == ["eu-west-1", "us-east-2"]


def test_short_interval_shortens_default_timeouts() -> None:
    config = load(["--refresh.interval=1s"], environ={})
    assert config.connect_timeout < 1 and config.read_timeout < 1
    with pytest.raises(ConfigError, match=r"--aws\.connect-timeout: must be shorter"):
        load(["--refresh.interval=2s", "--aws.connect-timeout=3s"], environ={})


def test_role_flag_and_file_targets_conflict() -> None:
    with pytest.raises(ConfigError, match=r"--aws\.role-arn: cannot be combined with targets"):
        load([f"--config.file={CONFIGS / 'full.ok.yaml'}",
              "--aws.role-arn=arn:aws:iam::123456789012:role/x"], environ={})


@pytest.mark.parametrize(("text", "seconds"), [
    ("1s", 1), ("30s", 30), ("5m", 300), ("1h", 3600), ("1h30m", 5400), ("250ms", 0.25),
    ("2d", 172800), ("1w", 604800),
])
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "5", "1.5s", "-1s", "1sec", "m5", "1h 30m"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(text)


def test_durations_have_an_upper_bound() -> None:
    with pytest.raises(ValueError, match="longer than the maximum"):
        parse_duration("99999999999999d")


@pytest.mark.parametrize(("text", "parsed"), [
    (":9729", ("", 9729)), ("127.0.0.1:0", ("127.0.0.1", 0)),
    ("localhost:9100", ("localhost", 9100)), ("[::1]:9729", ("::1", 9729)),
])
def test_addresses(text: str, parsed: tuple[str, int]) -> None:
    assert parse_address(text) == parsed


@pytest.mark.parametrize("text", ["9729", "host:", "host:99999", "[::1:9729", "a b:1",
                                  "::1:9729", "[zz]:1"])
def test_bad_addresses(text: str) -> None:
    with pytest.raises(ValueError, match="invalid"):
        parse_address(text)


def run_cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "exporter", *args], cwd=REPO,
                          env=exporter_env(None, **env), capture_output=True, text=True, timeout=60,
                          check=False)


# Configuration errors, checked in-process through cli.main (they end before anything starts);
# the real process is checked below for the errors that come later, and for one of these.
@pytest.mark.parametrize(("args", "env", "named"), [
    (["--refresh.interval=fast"], {}, "--refresh.interval: invalid duration 'fast'"),
    (["--refresh.interval=0s"], {}, "--refresh.interval: '0s' is shorter than the minimum"),
    (["--web.listen-address=nowhere"], {}, "--web.listen-address: invalid address"),
    (["--aws.regions=mars-1"], {}, "--aws.regions: invalid AWS region 'mars-1'"),
    (["--log.level=loud"], {}, "--log.level: expected one of"),
    ([], {"MACIE_EXPORTER_REFRESH_CONCURRENCY": "lots"}, "MACIE_EXPORTER_REFRESH_CONCURRENCY:"),
    ([f"--config.file={CONFIGS / 'invalid-yaml.bad.yaml'}"], {}, "invalid-yaml.bad.yaml"),
    ([f"--config.file={CONFIGS / 'unknown-top-key.bad.yaml'}"], {},
     "unknown key refresh_interval"),
    (["--config.file=/does/not/exist.yaml"], {}, "--config.file: cannot read"),
    (["--refresh.concurrency=0"], {}, "--refresh.concurrency: expected a whole number from 1 to"),
    (["--refresh.concurrency=257"], {}, "--refresh.concurrency: expected a whole number"),
    (["--aws.requests-per-second=-1"], {}, "--aws.requests-per-second: expected 0 (no limit)"),
    (["--aws.requests-per-second=fast"], {}, "--aws.requests-per-second: expected a number"),
    (["--refresh.status-interval=0s"], {}, "--refresh.status-interval: '0s' is shorter"),
    (["--aws.external-id=abc"], {},
     "--aws.external-id: set only together with --aws.role-arn"),
    ([], {"MACIE_EXPORTER_AWS_EXTERNAL_ID": "abc"},
     "MACIE_EXPORTER_AWS_EXTERNAL_ID: set only together with --aws.role-arn"),
    (["--refresh.interval=99999999999999d"], {}, "--refresh.interval: duration"),
    ([f"--config.file={CONFIGS / 'not-utf8.yaml.bin'}"], {}, "not UTF-8 text"),
])
def test_bad_configuration_exits_2(args: list[str], env: dict[str, str], named: str,
                                   monkeypatch: pytest.MonkeyPatch,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    for name in [k for k in os.environ if k.startswith(("AWS_", "MACIE_EXPORTER_"))]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert main(args) == 2
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert named in lines[0] and lines[0].startswith("macie-exporter: error: ")
    assert not out


@pytest.mark.parametrize(("args", "env", "named"), [
    (["--web.listen-adress=:1"], {}, "unknown flag --web.listen-adress"),
    (["--web.listen-address=203.0.113.7:9729"], {}, "--web.listen-address: cannot listen"),
    ([], {"AWS_PROFILE": "no-such-profile", "AWS_DEFAULT_REGION": ""},
     "AWS SDK configuration: The config profile (no-such-profile) could not be found"),
])
def test_cli_bad_configuration_exits_2(args: list[str], env: dict[str, str],
                                       named: str) -> None:
    result = run_cli(*args, **env)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert named in lines[0]
    assert lines[0].startswith("macie-exporter: error: ")
    assert "Traceback" not in result.stderr and not result.stdout


def test_cli_version() -> None:
    result = run_cli("--version")
    assert result.returncode == 0 and result.stdout.startswith("macie-exporter ")


def test_a_file_name_with_a_nul_byte_is_a_configuration_error() -> None:
    # Found by test_properties: open() raised ValueError, which escaped as a traceback.
    with pytest.raises(ConfigError, match=r"--config\.file: .* NUL byte"):
        load(["--config.file=a\x00b"], environ={})
    with pytest.raises(WebConfigError, match="NUL byte"):
        load_web_config("web\x00.yml")


def test_listen_addresses_from_a_repeated_flag_the_env_var_and_a_yaml_list(
        tmp_path: Path) -> None:
    assert load([], environ={}).listen_addresses == (("", 9729),)
    flags = load(["--web.listen-address=127.0.0.1:9100", "--web.listen-address=[::1]:9101"],
                 environ={"MACIE_EXPORTER_WEB_LISTEN_ADDRESS": ":1"})
    assert flags.listen_addresses == (("127.0.0.1", 9100), ("::1", 9101))
    assert (flags.listen_host, flags.listen_port) == ("127.0.0.1", 9100)
    env = load([], environ={"MACIE_EXPORTER_WEB_LISTEN_ADDRESS": "127.0.0.1:1, :2"})
    assert env.listen_addresses == (("127.0.0.1", 1), ("", 2))
    path = tmp_path / "config.yml"
    path.write_text("web:\n  listen_address: ['localhost:3', ':4']\n", encoding="utf-8")
    assert load([f"--config.file={path}"], environ={}).listen_addresses == (
        ("localhost", 3), ("", 4))
    # Port 0 (a free port) may be asked for twice; a real port may not.
    assert len(load(["--web.listen-address=127.0.0.1:0,127.0.0.1:0"],
                    environ={}).listen_addresses) == 2
    with pytest.raises(ConfigError, match=r"^--web\.listen-address: address ':5' is given twice"):
        load(["--web.listen-address=:5", "--web.listen-address=:5"], environ={})
    with pytest.raises(ConfigError, match=r"^--web\.listen-address: expected an address"):
        load(["--web.listen-address=,"], environ={})


def test_the_new_web_and_metrics_options_default_off() -> None:
    config = load([], environ={})
    assert not config.disable_exporter_metrics and not config.metric_filter.active
    assert not config.check
    assert load(["--web.disable-exporter-metrics"], environ={}).disable_exporter_metrics
    assert load(["--config.check"], environ={}).check
    for path in ("/-/healthy", "/-/ready"):
        with pytest.raises(ConfigError, match=r"--web\.telemetry-path: invalid path"):
            load([f"--web.telemetry-path={path}"], environ={})
