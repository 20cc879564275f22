"""Configuration: defaults in one table, then the YAML file, then env vars, then flags.

Every option is a flag `--group.name`, an env var `MACIE_EXPORTER_GROUP_NAME` and a YAML key
`group: {name: ...}` (dashes become underscores). Parsing validates everything, so nothing
downstream re-checks; every error names the flag, env var or YAML key that was wrong.
"""

from __future__ import annotations

import argparse
import dataclasses
import ipaddress
import math
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn
from urllib.parse import urlsplit

import yaml

from exporter.collectors import REGISTRY
from exporter.collectors.buckets import CONDITIONS as BUCKET_CONDITIONS
from exporter.model import DiscoveryConfig, OrganizationsConfig, TargetConfig, tag_label_name
from exporter.render.filter import KEEP_ALL, MetricFilter

DEFAULT_PORT = 9729
ENV_PREFIX = "MACIE_EXPORTER_"


class ConfigError(Exception):
    """Invalid configuration; the message names the flag, env var or key at fault."""


@dataclass(frozen=True, slots=True)
class Config:
    # (host, port) of every --web.listen-address, in the order given.
    listen_addresses: tuple[tuple[str, int], ...]
    telemetry_path: str
    web_config_file: str | None
    targets: tuple[TargetConfig, ...]
    # --aws.regions as given (ALL_REGIONS for all); the regions of discovered targets.
    regions: tuple[str, ...]
    endpoint_url: str | None
    retry_mode: str
    max_attempts: int
    connect_timeout: float
    read_timeout: float
    refresh_interval: float
    concurrency: int
    status_interval: float
    idle_interval: float
    requests_per_second: float
    full_redescribe_interval: float
    tag_keys: tuple[str, ...]
    terminal_max_age: float
    log_level: str
    log_format: str
    demo: bool
    once: bool
    # The jobs list's filterCriteria ({"includes": [...], "excludes": [...]}), or None.
    list_filter: dict[str, list[dict[str, Any]]] | None = None
    discovery: DiscoveryConfig | None = None
    shard_index: int = 0
    shard_total: int = 1
    buckets_only: frozenset[str] = frozenset()
    # Collector name -> its interval in seconds, for the collectors switched on.
    collectors: tuple[tuple[str, float], ...] = ()
    disable_exporter_metrics: bool = False
    metric_filter: MetricFilter = KEEP_ALL
    check: bool = False  # --config.check: validate, print one line, exit

    @property
    def listen_host(self) -> str:
        return self.listen_addresses[0][0]

    @property
    def listen_port(self) -> int:
        return self.listen_addresses[0][1]
    enable_lifecycle: bool = False
    # --config.file, which a reload reads again: where the configuration came from, not a
    # part of it.
    config_file: str | None = dataclasses.field(default=None, compare=False)


# ---------------------------------------------------------------- value parsers

_DURATION_PART = re.compile(r"(\d+)(ms|s|m|h|d|w)")
MAX_DURATION = 3650 * 86400
_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d{1,2}$")
_ROLE_ARN = re.compile(r"^arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]{1,512}$")
_LOG_LEVELS = ("debug", "info", "warn", "error")


def parse_duration(text: str) -> float:
    """Prometheus-style durations: `500ms`, `30s`, `5m`, `1h30m`, `1d`."""
    text = text.strip()
    if not text or _DURATION_PART.sub("", text):
        raise ValueError(f"invalid duration {text!r} (use e.g. 30s, 5m, 1h)")
    seconds = sum(int(n) * _DURATION_UNITS[unit] for n, unit in _DURATION_PART.findall(text))
    if seconds > MAX_DURATION:
        raise ValueError(f"duration {text!r} is longer than the maximum of 3650d")
    return seconds


def _interval(text: str) -> float:
    seconds = parse_duration(text)
    if seconds < 1:
        raise ValueError(f"{text!r} is shorter than the minimum of 1s")
    return seconds


def _duration(text: str) -> float:
    return parse_duration(text)


def _positive_duration(text: str) -> float:
    seconds = parse_duration(text)
    if seconds <= 0:
        raise ValueError(f"{text!r} must be longer than 0s")
    return seconds


def _rate(text: str) -> float:
    try:
        rate = float(text)
    except ValueError:
        raise ValueError(f"expected a number of requests per second, got {text!r}") from None
    if not math.isfinite(rate) or rate < 0:
        raise ValueError(f"expected 0 (no limit) or a positive number, got {text!r}")
    return rate


def parse_address(text: str) -> tuple[str, int]:
    """`host:port`, `:port` (all interfaces, IPv6 and IPv4: host "") or `[ipv6]:port` →
    (host, port)."""
    host, sep, port_text = text.rpartition(":")
    if not sep:
        raise ValueError(f"invalid address {text!r} (use host:port, e.g. :{DEFAULT_PORT})")
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"invalid port in address {text!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"invalid IPv6 host in address {text!r}") from None
    elif ":" in host or not re.fullmatch(r"[A-Za-z0-9.-]*", host):
        raise ValueError(f"invalid host in address {text!r}")
    return host, int(port_text)


def _listen_addresses(value: Any) -> tuple[tuple[str, int], ...]:
    """Every listen address: a repeated flag or a YAML list, each item possibly
    comma-separated (as the env var is)."""
    items = value if isinstance(value, list) else [value]
    texts = [part.strip() for item in items for part in _string(item).split(",")]
    if not any(texts):
        raise ValueError(f"expected an address (host:port, e.g. :{DEFAULT_PORT})")
    addresses: list[tuple[str, int]] = []
    for text in texts:
        if not text:
            continue
        address = parse_address(text)
        if address in addresses and address[1] != 0:  # port 0: a new free port each time
            raise ValueError(f"address {text!r} is given twice")
        addresses.append(address)
    return tuple(addresses)


def _patterns(value: Any) -> tuple[re.Pattern[str], ...]:
    """Comma-separated regular expressions (a YAML list for expressions with a comma)."""
    patterns = []
    for text in _list(value):
        try:
            patterns.append(re.compile(text))
        except re.error as err:
            raise ValueError(f"invalid regular expression {text!r}: {err}") from None
    return tuple(patterns)


def _from_text(parse: Callable[[str], Any]) -> Callable[[Any], Any]:
    """A parser of text that also takes YAML values: non-text ones are a clean error."""
    return lambda value: parse(_string(value))


def _list(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        items = [v.strip() for v in value.split(",")]
    elif isinstance(value, list):
        items = [str(v).strip() if isinstance(v, str | int) else "" for v in value]
        if not all(isinstance(v, str | int) for v in value):
            raise ValueError("expected a list of strings")
    else:
        raise ValueError(f"expected a comma-separated list, got {type(value).__name__}")
    return tuple(v for v in items if v)


ALL_REGIONS = "all"


def _regions(value: Any) -> tuple[str, ...]:
    """Regions, or `(ALL_REGIONS,)` for `all`: every region where botocore lists macie2."""
    regions = _list(value)
    if regions == (ALL_REGIONS,):
        return regions
    for region in regions:
        if not _REGION.match(region):
            raise ValueError(f"invalid AWS region {region!r}")
    if len(set(regions)) != len(regions):
        raise ValueError("a region is listed twice")
    return regions


def _role_arn(value: Any) -> str | None:
    text = _string(value)
    if text and not _ROLE_ARN.match(text):
        raise ValueError(f"invalid IAM role ARN {text!r} (arn:aws:iam::<account>:role/<name>)")
    return text or None


def _string(value: Any) -> str:
    if not isinstance(value, str | int) or isinstance(value, bool):
        raise ValueError(f"expected a string, got {type(value).__name__}")
    return str(value).strip()


def _optional_string(value: Any) -> str | None:
    return _string(value) or None


def _endpoint_url(value: Any) -> str | None:
    text = _string(value)
    if not text:
        return None
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"invalid URL {text!r} (use http(s)://host[:port])")
    return text


_RESERVED_PATHS = ("/", "/healthz", "/readyz", "/-/healthy", "/-/ready")


def _path(value: Any) -> str:
    text = _string(value)
    if not text.startswith("/") or text in _RESERVED_PATHS or " " in text:
        raise ValueError(f"invalid path {text!r} (must start with / and not be "
                         f"{', '.join(_RESERVED_PATHS[:-1])} or {_RESERVED_PATHS[-1]})")
    return text


def _int_between(low: int, high: int) -> Callable[[Any], int]:
    def parse(value: Any) -> int:
        text = _string(value)
        if not re.fullmatch(r"[0-9]+", text) or not low <= int(text) <= high:
            raise ValueError(f"expected a whole number from {low} to {high}, got {text!r}")
        return int(text)

    return parse


def _choice(*choices: str) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        text = _string(value).lower()
        if text not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}, got {text!r}")
        return text

    return parse


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = _string(value).lower()
    if text in ("true", "1", "yes"):
        return True
    if text in ("false", "0", "no", ""):
        return False
    raise ValueError(f"expected true or false, got {text!r}")


def _tag_keys(value: Any) -> tuple[str, ...]:
    keys = _list(value)
    seen: dict[str, str] = {}
    for key in keys:
        label = tag_label_name(key)
        if label in seen:
            raise ValueError(f"tag keys {seen[label]!r} and {key!r} both map to label {label}")
        seen[label] = key
    return keys


# ---------------------------------------------------------------- the option table


@dataclass(frozen=True, slots=True)
class Option:
    flag: str  # without the leading dashes, e.g. "web.listen-address"
    default: Any
    parse: Callable[[Any], Any]
    help: str
    boolean: bool = False
    yaml_key: tuple[str, ...] | None = None  # when the flag's own spelling does not map
    repeatable: bool = False  # the flag may be given several times (a list)

    @property
    def env(self) -> str:
        return ENV_PREFIX + re.sub(r"[.-]", "_", self.flag).upper()

    @property
    def yaml_path(self) -> tuple[str, ...]:
        if self.yaml_key:
            return self.yaml_key
        return tuple(part.replace("-", "_") for part in self.flag.split("."))


def _bucket_conditions(value: Any) -> frozenset[str]:
    conditions = _list(value)
    for condition in conditions:
        if condition not in BUCKET_CONDITIONS:
            raise ValueError(f"unknown condition {condition!r} (use "
                             f"{', '.join(BUCKET_CONDITIONS)})")
    return frozenset(conditions)


def collector_flag(name: str) -> str:
    """`--collector.<flag>` of a collector: its name with dashes (`automated-discovery`)."""
    return "collector." + name.replace("_", "-")


def _collector_options() -> tuple[Option, ...]:
    """`--collector.<name>` (on by default) and `--collector.<name>.interval` for every
    registered collector that can be switched off; YAML `collector: {<name>: ...,
    <name>_interval: ...}`."""
    options: list[Option] = []
    for collector in REGISTRY:
        if collector.switch is None:
            continue
        name, flag = collector.name, collector_flag(collector.name)
        options += [
            Option(flag, True, _bool, collector.switch.help, True, yaml_key=("collector", name)),
            Option(f"{flag}.interval", collector.switch.default_interval,
                   _from_text(_interval),
                   f"How often to collect {name.replace('_', ' ')} (at least 1s).",
                   yaml_key=("collector", f"{name}_interval")),
        ]
    return tuple(options)


def collector_readme_rows() -> list[str]:
    """The configuration table's rows of the registered collectors' options, as the README
    has them (tests/test_readme.py checks they are there)."""
    rows = []
    for option in _collector_options():
        if option.boolean:
            default = "true"
            meaning = f"{option.help.removesuffix('.')}; `--no-{option.flag}` turns it off."
        else:
            default, meaning = f"`{option.default}`", option.help
        rows.append(f"| `--{option.flag}` | `{option.env}` | `{'.'.join(option.yaml_path)}` "
                    f"| {default} | {meaning} |")
    return rows


OPTIONS: tuple[Option, ...] = (
    Option("web.listen-address", f":{DEFAULT_PORT}", _listen_addresses,
           "Address on which to expose metrics and the web endpoints; repeat the flag (or "
           "separate by commas) to listen on several.", repeatable=True),
    Option("web.telemetry-path", "/metrics", _path, "Path under which to expose metrics."),
    Option("web.config.file", "", _optional_string,
           "Exporter-toolkit web config file: TLS, client certificates, basic auth, headers.",
           yaml_key=("web", "config_file")),
    Option("web.disable-exporter-metrics", False, _bool,
           "Leave the process and Python metrics (process_*, python_info, python_gc_*) out.",
           True),
    Option("metrics.allowlist", "", _patterns,
           "Comma-separated regular expressions: export only the metric families whose whole "
           "name one matches (default: every family)."),
    Option("metrics.denylist", "", _patterns,
           "Comma-separated regular expressions: leave out the metric families whose whole "
           "name one matches; wins over --metrics.allowlist."),
    Option("aws.regions", "", _regions,
           "Comma-separated AWS regions to poll, or all: every region where botocore lists "
           "macie2 (default: the SDK's default region)."),
    Option("aws.role-arn", "", _role_arn,
           "IAM role to assume for every region (default: the SDK's default credentials)."),
    Option("aws.external-id", "", _optional_string, "External ID to pass when assuming the role."),
    Option("aws.endpoint-url", "", _endpoint_url,
           "Macie API endpoint URL (default: the SDK's endpoint for the region)."),
    Option("aws.retry-mode", "standard", _choice("standard", "adaptive"),
           "botocore retry mode."),
    Option("aws.max-attempts", "5", _int_between(1, 20),
           "Attempts per API call, the first one included (botocore max_attempts)."),
    Option("aws.requests-per-second", "0", _from_text(_rate),
           "Most AWS calls per second per account and region (a token bucket); 0 is no limit."),
    Option("aws.connect-timeout", "5s", _from_text(_positive_duration),
           "Connect timeout per HTTP attempt; must be shorter than the refresh interval."),
    Option("aws.read-timeout", "20s", _from_text(_positive_duration),
           "Read timeout per HTTP attempt; must be shorter than the refresh interval."),
    Option("refresh.interval", "60s", _from_text(_interval),
           "How often to poll the Macie API (at least 1s)."),
    Option("refresh.concurrency", "16", _int_between(1, 256),
           "AWS calls in flight at once, for the whole process (1-256)."),
    Option("refresh.status-interval", "1h", _from_text(_interval),
           "How often to check Macie's status per account and region (the status collector)."),
    Option("refresh.idle-interval", "5m", _from_text(_interval),
           "How often a target with no active job is listed (at least the refresh interval; "
           "equal to it lists every target every interval)."),
    Option("refresh.full-redescribe-interval", "24h", _from_text(_positive_duration),
           "How often COMPLETE and CANCELLED jobs are described again (tag changes)."),
    Option("web.enable-lifecycle", False, _bool,
           "Enable POST /-/reload, which reloads the configuration (as SIGHUP does).", True),
    Option("jobs.tag-labels", "", _tag_keys,
           "Comma-separated job tag keys to export as tag_<key> labels."),
    Option("jobs.terminal-max-age", "0s", _from_text(_duration),
           "Leave COMPLETE and CANCELLED jobs whose last run (or creation) is older than this "
           "out of the per-job series; they still count in macie_classification_jobs. "
           "0s keeps every job."),
    Option("buckets.only", "", _bucket_conditions,
           "Export the per-bucket series only of the buckets that meet one of these "
           "comma-separated conditions: " + ", ".join(BUCKET_CONDITIONS) + " (default: every "
           "bucket)."),
    Option("shard.index", "0", _int_between(0, 9999),
           "This replica's shard: it polls the targets whose stable hash modulo "
           "--shard.total is this index."),
    Option("shard.total", "1", _int_between(1, 10000),
           "Number of shards (replicas) the targets are split across."),
    *_collector_options(),
    Option("log.level", "info", _choice(*_LOG_LEVELS), "Log level: debug, info, warn, error."),
    Option("log.format", "logfmt", _choice("logfmt", "json"), "Log format: logfmt or json."),
    Option("demo", False, _bool,
           "Run against a built-in simulated Macie account; needs no AWS account.", True),
    Option("once", False, _bool,
           "Refresh once, print the metrics to stdout, exit 0 if every target succeeded.", True),
)
CONFIG_FILE_ENV = ENV_PREFIX + "CONFIG_FILE"
COLLECTORS = tuple(c.name for c in REGISTRY if c.switch is not None)
_TARGET_KEYS = {"role_arn", "external_id", "regions"}
# ListJobsFilterTerm, as the botocore macie2 model defines it.
FILTER_KEYS = ("jobType", "jobStatus", "createdAt", "name")
FILTER_COMPARATORS = ("EQ", "GT", "GTE", "LT", "LTE", "NE", "CONTAINS", "STARTS_WITH")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        match = re.search(r"unrecognized arguments: (\S+)", message)
        if match:
            raise ConfigError(f"unknown flag {match.group(1)}")
        raise ConfigError(message)


def _argument_parser(prog: str) -> argparse.ArgumentParser:
    from exporter import __version__

    parser = _Parser(
        prog=prog, allow_abbrev=False, description="Prometheus exporter for Amazon Macie jobs."
    )
    parser.add_argument("--config.file", dest="config.file", metavar="PATH",
                        help=f"YAML configuration file (env {CONFIG_FILE_ENV}).")
    parser.add_argument("--config.check", dest="config.check", action="store_true",
                        help="Load and check the flags, env vars, config file and web config "
                             "file, print one line (config OK, or the error) and exit 0 or 2.")
    for option in OPTIONS:
        help_text = f"{option.help} (env {option.env})"
        if option.boolean and option.default is True:  # on by default: --no-<flag> turns it off
            parser.add_argument(f"--{option.flag}", dest=option.flag,
                                action=argparse.BooleanOptionalAction, default=None,
                                help=f"{help_text} (default on)")
        elif option.boolean:
            parser.add_argument(f"--{option.flag}", dest=option.flag, action="store_const",
                                const=True, default=None, help=help_text)
        elif option.repeatable:
            parser.add_argument(f"--{option.flag}", dest=option.flag, metavar="VALUE",
                                action="append", default=None,
                                help=f"{help_text} (default {option.default!r}; repeatable)")
        else:
            parser.add_argument(f"--{option.flag}", dest=option.flag, metavar="VALUE",
                                default=None, help=f"{help_text} (default {option.default!r})")
    parser.add_argument("--version", action="version", version=f"macie-exporter {__version__}")
    return parser


def _read_yaml(path: str) -> dict[str, Any]:
    if "\x00" in path:
        raise ConfigError(f"--config.file: {path!r} is not a file name (it holds a NUL byte)")
    try:
        with open(path, encoding="utf-8") as handle:
            data = yaml.safe_load(handle)
    except OSError as err:
        raise ConfigError(f"--config.file: cannot read {path}: {err.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config file {path}: not UTF-8 text") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or "invalid YAML"
        raise ConfigError(f"config file {path}: {problem}{where}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path}: expected a mapping at the top level")
    return data


def _flatten_yaml(data: Mapping[str, Any], path: str) -> tuple[dict[str, Any], Any]:
    """YAML values by option flag, plus the raw `targets` list; rejects unknown keys."""
    known = {o.yaml_path: o.flag for o in OPTIONS}
    groups = {p[0] for p in known if len(p) == 2}
    values: dict[str, Any] = {}
    for key, value in data.items():
        if key in ("targets", "filters", "discovery"):
            continue
        if (key,) in known:
            values[known[(key,)]] = value
        elif key in groups:
            if not isinstance(value, dict):
                raise ConfigError(f"config file {path}: {key}: expected a mapping")
            for sub, subvalue in value.items():
                if (key, sub) not in known:
                    raise ConfigError(f"config file {path}: unknown key {key}.{sub}")
                values[known[(key, sub)]] = subvalue
        else:
            raise ConfigError(f"config file {path}: unknown key {key}")
    return values, data.get("targets")


def _filters(raw: Any, path: str) -> dict[str, list[dict[str, Any]]] | None:
    """`filters: {includes: [...], excludes: [...]}` → the jobs list's filterCriteria."""
    if raw is None:
        return None
    where = f"config file {path}: filters"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping with includes and/or excludes")
    criteria: dict[str, list[dict[str, Any]]] = {}
    for side, terms in raw.items():
        if side not in ("includes", "excludes"):
            raise ConfigError(f"{where}: unknown key {side}")
        if not isinstance(terms, list) or not terms:
            raise ConfigError(f"{where}.{side}: expected a non-empty list of terms")
        criteria[side] = [_filter_term(term, f"{where}.{side}[{i}]")
                          for i, term in enumerate(terms)]
    return criteria or None


_ROLE_NAME = re.compile(r"^[\w+=,.@-]{1,64}$")
_ACCOUNT_ID = re.compile(r"^\d{12}$")


def _discovery(raw: Any, path: str) -> DiscoveryConfig | None:
    """`discovery: {interval, organizations: {...}}`; errors name the key."""
    if raw is None:
        return None
    where = f"config file {path}: discovery"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping with interval and organizations")
    for key in raw:
        if key not in ("interval", "organizations"):
            raise ConfigError(f"{where}: unknown key {key}")
    try:
        interval = _interval(_string(raw.get("interval", "1h")))
    except ValueError as err:
        raise ConfigError(f"{where}.interval: {err}") from None
    orgs = raw.get("organizations")
    where = f"{where}.organizations"
    if not isinstance(orgs, dict):
        raise ConfigError(f"{where}: expected a mapping with at least member_role_name")
    known = ("role_arn", "external_id", "member_role_name", "member_external_id",
             "exclude_accounts")
    for key in orgs:
        if key not in known:
            raise ConfigError(f"{where}: unknown key {key}")
    values: dict[str, Any] = {}
    for key, parse in (("role_arn", _role_arn), ("external_id", _optional_string),
                       ("member_role_name", _string), ("member_external_id", _optional_string)):
        try:
            values[key] = parse(orgs.get(key, ""))
        except ValueError as err:
            raise ConfigError(f"{where}.{key}: {err}") from None
    if not values["member_role_name"]:
        raise ConfigError(f"{where}.member_role_name: required (the role to assume in every "
                          "account, e.g. macie-exporter)")
    if not _ROLE_NAME.match(values["member_role_name"]):
        raise ConfigError(f"{where}.member_role_name: invalid IAM role name "
                          f"{values['member_role_name']!r}")
    if values["external_id"] and not values["role_arn"]:
        raise ConfigError(f"{where}.external_id: set only together with role_arn")
    excluded = orgs.get("exclude_accounts", [])
    if not isinstance(excluded, list) or not all(
            isinstance(a, str | int) and not isinstance(a, bool) for a in excluded):
        raise ConfigError(f"{where}.exclude_accounts: expected a list of 12-digit account IDs")
    for account in excluded:
        if not _ACCOUNT_ID.match(str(account)):
            raise ConfigError(f"{where}.exclude_accounts: {account!r} is not a 12-digit "
                              "account ID (quote it in YAML to keep leading zeros)")
    return DiscoveryConfig(interval, OrganizationsConfig(
        member_role_name=values["member_role_name"], role_arn=values["role_arn"],
        external_id=values["external_id"], member_external_id=values["member_external_id"],
        exclude_accounts=frozenset(str(a) for a in excluded)))


def _filter_term(term: Any, where: str) -> dict[str, Any]:
    if not isinstance(term, dict):
        raise ConfigError(f"{where}: expected a mapping with key, comparator and values")
    for name in term:
        if name not in ("key", "comparator", "values"):
            raise ConfigError(f"{where}: unknown key {name}")
    key, comparator = term.get("key"), term.get("comparator", "EQ")
    if key not in FILTER_KEYS:
        raise ConfigError(f"{where}.key: expected one of {', '.join(FILTER_KEYS)}, got {key!r}")
    if comparator not in FILTER_COMPARATORS:
        raise ConfigError(f"{where}.comparator: expected one of "
                          f"{', '.join(FILTER_COMPARATORS)}, got {comparator!r}")
    values = term.get("values")
    if isinstance(values, str):
        values = [values]
    if (not isinstance(values, list) or not values
            or not all(isinstance(v, str) and v for v in values)):
        raise ConfigError(f"{where}.values: expected a non-empty list of strings")
    return {"key": key, "comparator": comparator, "values": list(values)}


def _yaml_targets(raw: Any, path: str) -> list[tuple[str, dict[str, Any]]]:
    if not isinstance(raw, list) or not raw:
        raise ConfigError(f"config file {path}: targets: expected a non-empty list")
    targets = []
    for index, item in enumerate(raw):
        where = f"config file {path}: targets[{index}]"
        if not isinstance(item, dict):
            raise ConfigError(f"{where}: expected a mapping")
        for key in item:
            if key not in _TARGET_KEYS:
                raise ConfigError(f"{where}: unknown key {key}")
        targets.append((where, item))
    return targets


def load(argv: Sequence[str], environ: Mapping[str, str] | None = None,
         prog: str = "macie-exporter") -> Config:
    """Parse flags, env vars and the config file into a validated `Config`."""
    environ = os.environ if environ is None else environ
    args = vars(_argument_parser(prog).parse_args(list(argv)))

    config_path = args.get("config.file") or environ.get(CONFIG_FILE_ENV) or None
    yaml_values: dict[str, Any] = {}
    raw_targets = None
    list_filter = None
    discovery = None
    if config_path:
        data = _read_yaml(config_path)
        yaml_values, raw_targets = _flatten_yaml(data, config_path)
        list_filter = _filters(data.get("filters"), config_path)
        discovery = _discovery(data.get("discovery"), config_path)

    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    defaulted: set[str] = set()
    for option in OPTIONS:
        if args.get(option.flag) is not None:
            raw, source = args[option.flag], f"--{option.flag}"
        elif option.env in environ:
            raw, source = environ[option.env], option.env
        elif option.flag in yaml_values:
            raw = yaml_values[option.flag]
            source = f"config file {config_path}: {'.'.join(option.yaml_path)}"
        else:
            raw, source = option.default, f"--{option.flag} default"
            defaulted.add(option.flag)
        sources[option.flag] = source
        try:
            values[option.flag] = option.parse(raw)
        except ValueError as err:
            raise ConfigError(f"{source}: {err}") from None

    interval = values["refresh.interval"]
    for flag in ("aws.connect-timeout", "aws.read-timeout"):
        if values[flag] >= interval:
            if flag not in defaulted:
                raise ConfigError(
                    f"{sources[flag]}: must be shorter than the refresh interval ({interval:g}s)"
                )
            values[flag] = interval / 2
    if values["refresh.idle-interval"] < interval:
        if "refresh.idle-interval" not in defaulted:
            raise ConfigError(f"{sources['refresh.idle-interval']}: must be at least the refresh "
                              f"interval ({interval:g}s)")
        values["refresh.idle-interval"] = interval

    if raw_targets is not None:
        if values["aws.role-arn"] or values["aws.external-id"]:
            flag = "--aws.role-arn" if values["aws.role-arn"] else "--aws.external-id"
            raise ConfigError(
                f"{flag}: cannot be combined with targets in the config file; "
                "put role_arn and external_id on a target instead"
            )
        specs = [_TargetSpec(f"{where}.", "role_arn", "external_id", "regions", item)
                 for where, item in _yaml_targets(raw_targets, config_path or "")]
    else:
        specs = [_TargetSpec("", "--aws.role-arn", sources["aws.external-id"],
                             sources["aws.regions"],
                             {"role_arn": values["aws.role-arn"] or "",
                              "external_id": values["aws.external-id"] or ""})]
    targets = build_targets(specs, values["aws.regions"])
    if discovery is not None and raw_targets is None and not values["aws.role-arn"]:
        targets = ()  # discovery alone: the organisation's accounts are the targets
    if values["shard.index"] >= values["shard.total"]:
        raise ConfigError(f"{sources['shard.index']}: {values['shard.index']} is not below "
                          f"--shard.total ({values['shard.total']})")
    return Config(
        listen_addresses=values["web.listen-address"],
        telemetry_path=values["web.telemetry-path"],
        web_config_file=values["web.config.file"],
        targets=targets,
        regions=values["aws.regions"],
        endpoint_url=values["aws.endpoint-url"],
        retry_mode=values["aws.retry-mode"],
        max_attempts=values["aws.max-attempts"],
        connect_timeout=values["aws.connect-timeout"],
        read_timeout=values["aws.read-timeout"],
        refresh_interval=interval,
        concurrency=values["refresh.concurrency"],
        status_interval=values["refresh.status-interval"],
        idle_interval=values["refresh.idle-interval"],
        requests_per_second=values["aws.requests-per-second"],
        full_redescribe_interval=values["refresh.full-redescribe-interval"],
        tag_keys=values["jobs.tag-labels"],
        terminal_max_age=values["jobs.terminal-max-age"],
        buckets_only=values["buckets.only"],
        log_level=values["log.level"],
        log_format=values["log.format"],
        demo=values["demo"],
        once=values["once"],
        list_filter=list_filter,
        discovery=discovery,
        shard_index=values["shard.index"],
        shard_total=values["shard.total"],
        collectors=tuple((name, values[f"{collector_flag(name)}.interval"])
                         for name in COLLECTORS if values[collector_flag(name)]),
        disable_exporter_metrics=values["web.disable-exporter-metrics"],
        metric_filter=MetricFilter(values["metrics.allowlist"], values["metrics.denylist"]),
        check=bool(args.get("config.check")),
        enable_lifecycle=values["web.enable-lifecycle"],
        config_file=config_path,
    )


@dataclass(frozen=True, slots=True)
class _TargetSpec:
    """One `targets` entry, or the flags' one target: its raw values and how to name them."""

    prefix: str  # "config file F: targets[0]." for YAML, "" for flags/env
    role_name: str  # the key or flag of each value, for messages
    external_id_name: str
    regions_name: str
    values: Mapping[str, Any]

    def name(self, field: str) -> str:
        return self.prefix + {"role_arn": self.role_name, "external_id": self.external_id_name,
                              "regions": self.regions_name}[field]


def build_targets(specs: Sequence[_TargetSpec],
                  default_regions: tuple[str, ...]) -> tuple[TargetConfig, ...]:
    """Targets from the flags or the config file's `targets`, by one set of rules."""
    targets: dict[TargetConfig, None] = {}  # in order; a set, not a list, to find duplicates
    for spec in specs:
        parsed: dict[str, Any] = {}
        for field, parse in (("role_arn", _role_arn), ("external_id", _optional_string)):
            try:
                parsed[field] = parse(spec.values.get(field, ""))
            except ValueError as err:
                raise ConfigError(f"{spec.name(field)}: {err}") from None
        try:
            regions = (_regions(spec.values["regions"]) if "regions" in spec.values
                       else default_regions)
        except ValueError as err:
            raise ConfigError(f"{spec.name('regions')}: {err}") from None
        role, external_id = parsed["role_arn"], parsed["external_id"]
        if external_id and not role:
            raise ConfigError(f"{spec.name('external_id')}: set only together with "
                              f"{spec.name('role_arn').removeprefix(spec.prefix)}")
        for region in regions or (None,):
            target = TargetConfig(region, role, external_id)
            if target in targets:
                raise ConfigError(f"{spec.prefix.rstrip('.')}: duplicates an earlier target "
                                  f"({region}, {role})")
            targets[target] = None
    return tuple(targets)
