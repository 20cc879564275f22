"""`--web.config.file` in the Prometheus exporter-toolkit format: TLS, client certs, basic auth.

The file (and the certificates it names) is checked for changes once a second, by a thread of
its own (a stat per file, off the request path), and parsed again only when one changed; a
change that does not load keeps the last good configuration and is logged once.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import ssl
import threading
import time
from base64 import b64decode
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import bcrypt
import yaml

from exporter.logs import fields

log = logging.getLogger(__name__)

_TLS_KEYS = {"cert_file", "key_file", "client_auth_type", "client_ca_file", "cipher_suites",
             "curve_preferences", "min_version", "max_version", "prefer_server_cipher_suites",
             "client_allowed_sans", "cert", "key"}
# Go's cipher suite names (crypto/tls) → OpenSSL's, for TLS 1.2 and below. Go does not let
# TLS 1.3 suites be chosen either (it ignores them in cipher_suites): they are accepted here and
# change nothing, as there.
_CIPHERS = {
    "TLS_RSA_WITH_RC4_128_SHA": "RC4-SHA",
    "TLS_RSA_WITH_3DES_EDE_CBC_SHA": "DES-CBC3-SHA",
    "TLS_RSA_WITH_AES_128_CBC_SHA": "AES128-SHA",
    "TLS_RSA_WITH_AES_256_CBC_SHA": "AES256-SHA",
    "TLS_RSA_WITH_AES_128_CBC_SHA256": "AES128-SHA256",
    "TLS_RSA_WITH_AES_128_GCM_SHA256": "AES128-GCM-SHA256",
    "TLS_RSA_WITH_AES_256_GCM_SHA384": "AES256-GCM-SHA384",
    "TLS_ECDHE_ECDSA_WITH_RC4_128_SHA": "ECDHE-ECDSA-RC4-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA": "ECDHE-ECDSA-AES128-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA": "ECDHE-ECDSA-AES256-SHA",
    "TLS_ECDHE_RSA_WITH_RC4_128_SHA": "ECDHE-RSA-RC4-SHA",
    "TLS_ECDHE_RSA_WITH_3DES_EDE_CBC_SHA": "ECDHE-RSA-DES-CBC3-SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA": "ECDHE-RSA-AES128-SHA",
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA": "ECDHE-RSA-AES256-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256": "ECDHE-ECDSA-AES128-SHA256",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256": "ECDHE-RSA-AES128-SHA256",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256": "ECDHE-RSA-AES128-GCM-SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256": "ECDHE-ECDSA-AES128-GCM-SHA256",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384": "ECDHE-RSA-AES256-GCM-SHA384",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384": "ECDHE-ECDSA-AES256-GCM-SHA384",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-RSA-CHACHA20-POLY1305",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-ECDSA-CHACHA20-POLY1305",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305": "ECDHE-RSA-CHACHA20-POLY1305",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305": "ECDHE-ECDSA-CHACHA20-POLY1305",
}
_TLS13_CIPHERS = {"TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384",
                  "TLS_CHACHA20_POLY1305_SHA256"}
# Go's curve names → OpenSSL's. Python's ssl sets one curve (set_ecdh_curve), not a list.
_CURVES = {"CurveP256": "prime256v1", "CurveP384": "secp384r1", "CurveP521": "secp521r1",
           "X25519": "X25519"}
_PRINTABLE = re.compile(r"[\t\x20-\x7e\x80-\xff]*")
_DURATION = re.compile(r"(?:(\d+)y)?(?:(\d+)w)?(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?"
                       r"(?:(\d+)ms)?")
_DURATION_UNITS = (365 * 86400, 7 * 86400, 86400, 3600, 60, 1, 0.001)
# Verified answers kept: successes and failures apart, so that wrong passwords cannot push a
# valid one out.
_ACCEPTED_SIZE, _REJECTED_SIZE = 256, 4096
CHECK_INTERVAL = 1.0  # seconds between two looks at the files
_HTTP_KEYS = {"http2", "headers"}
# The response headers the toolkit lets a web config set.
_ALLOWED_HEADERS = {"strict-transport-security", "x-content-type-options", "x-frame-options",
                    "x-xss-protection", "content-security-policy"}
_VERSIONS = {"TLS10": ssl.TLSVersion.TLSv1, "TLS11": ssl.TLSVersion.TLSv1_1,
             "TLS12": ssl.TLSVersion.TLSv1_2, "TLS13": ssl.TLSVersion.TLSv1_3}
_CLIENT_AUTH = {"": ssl.CERT_NONE, "NoClientCert": ssl.CERT_NONE,
                "RequestClientCert": ssl.CERT_NONE,
                "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
                "RequireAndVerifyClientCert": ssl.CERT_REQUIRED}
# Checked when the user is unknown, so that a wrong user costs as much as a wrong password.
_DUMMY_HASH = bcrypt.hashpw(b"macie-exporter-dummy", bcrypt.gensalt(rounds=10))


class WebConfigError(ValueError):
    """An invalid web config file; the message names the key at fault."""


@dataclass(frozen=True)
class WebConfig:
    ssl_context: ssl.SSLContext | None = None
    users: tuple[tuple[str, bytes], ...] = ()
    headers: tuple[tuple[str, str], ...] = ()
    allowed_sans: tuple[str, ...] = ()
    rate_limit: tuple[float, int] | None = None  # (interval in seconds, burst)
    files: tuple[str, ...] = ()  # the file and the certificate files it names


def _mapping(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise WebConfigError(f"{where}: expected a mapping")
    return value


def _unknown(data: dict[str, Any], known: set[str], where: str) -> None:
    for key in data:
        if key not in known:
            raise WebConfigError(f"{where}: unknown key {key}")


def _path(base: str, value: Any, key: str) -> str:
    if not isinstance(value, str) or not value:
        raise WebConfigError(f"tls_server_config.{key}: expected a file path")
    return value if os.path.isabs(value) else os.path.join(base, value)


def _tls(data: dict[str, Any], base: str) -> tuple[ssl.SSLContext | None, tuple[str, ...]]:
    _unknown(data, _TLS_KEYS, "tls_server_config")
    if not data:
        return None, ()
    if "cert" in data or "key" in data:
        raise WebConfigError("tls_server_config.cert/key: inline certificates are not "
                             "supported; use cert_file and key_file")
    for key in ("cert_file", "key_file"):
        if key not in data:
            raise WebConfigError(f"tls_server_config.{key}: missing")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(_path(base, data["cert_file"], "cert_file"),
                                _path(base, data["key_file"], "key_file"))
    except (OSError, ssl.SSLError) as err:
        raise WebConfigError(f"tls_server_config.cert_file/key_file: cannot load: {err}") from None
    for key, attribute, default in (("min_version", "minimum_version", "TLS12"),
                                    ("max_version", "maximum_version", None)):
        name = data.get(key, default)
        if name is None:
            continue
        if name not in _VERSIONS:
            raise WebConfigError(f"tls_server_config.{key}: expected one of "
                                 f"{', '.join(_VERSIONS)}, got {name!r}")
        setattr(context, attribute, _VERSIONS[name])
    auth = data.get("client_auth_type", "")
    if auth == "RequireAnyClientCert":
        raise WebConfigError("tls_server_config.client_auth_type: RequireAnyClientCert is not "
                             "supported (Python verifies every client certificate it asks "
                             "for); use RequireAndVerifyClientCert")
    if auth not in _CLIENT_AUTH:
        raise WebConfigError(f"tls_server_config.client_auth_type: unknown value {auth!r}")
    context.verify_mode = _CLIENT_AUTH[auth]
    if "client_ca_file" in data:
        try:
            context.load_verify_locations(_path(base, data["client_ca_file"], "client_ca_file"))
        except (OSError, ssl.SSLError) as err:
            raise WebConfigError(f"tls_server_config.client_ca_file: cannot load: {err}") from None
    elif context.verify_mode != ssl.CERT_NONE:
        raise WebConfigError(f"tls_server_config.client_ca_file: required with {auth}")
    _ciphers(context, data.get("cipher_suites"))
    _curves(context, data.get("curve_preferences"))
    prefer = data.get("prefer_server_cipher_suites", True)
    if not isinstance(prefer, bool):
        raise WebConfigError("tls_server_config.prefer_server_cipher_suites: expected true or "
                             "false")
    if prefer:
        context.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    else:
        context.options &= ~ssl.OP_CIPHER_SERVER_PREFERENCE
    sans = data.get("client_allowed_sans") or []
    if not isinstance(sans, list) or not all(isinstance(s, str) for s in sans):
        raise WebConfigError("tls_server_config.client_allowed_sans: expected a list of names")
    return context, tuple(sans)


def _ciphers(context: ssl.SSLContext, names: Any) -> None:
    """cipher_suites: Go's names for TLS 1.2 and below, applied as OpenSSL's cipher list."""
    if names is None:
        return
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise WebConfigError("tls_server_config.cipher_suites: expected a list of names")
    chosen = []
    for name in names:
        if name in _TLS13_CIPHERS:
            continue
        if name not in _CIPHERS:
            raise WebConfigError(f"tls_server_config.cipher_suites: unknown cipher suite "
                                 f"{name!r} (use Go's names, e.g. "
                                 "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256)")
        chosen.append(_CIPHERS[name])
    if not chosen:
        return
    for openssl_name, name in zip(chosen, [n for n in names if n not in _TLS13_CIPHERS],
                                  strict=True):
        try:
            ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).set_ciphers(openssl_name)
        except ssl.SSLError:
            raise WebConfigError(f"tls_server_config.cipher_suites: {name} is not available "
                                 f"in this Python's OpenSSL ({ssl.OPENSSL_VERSION})") from None
    context.set_ciphers(":".join(chosen))


def _curves(context: ssl.SSLContext, names: Any) -> None:
    """curve_preferences: Python's ssl sets a single curve, so one name is applied and a list
    of several (an order of preference) is refused."""
    if names is None or names == []:
        return
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise WebConfigError("tls_server_config.curve_preferences: expected a list of names")
    for name in names:
        if name not in _CURVES:
            raise WebConfigError(f"tls_server_config.curve_preferences: unknown curve {name!r} "
                                 f"(expected one of {', '.join(_CURVES)})")
    if len(names) > 1:
        raise WebConfigError("tls_server_config.curve_preferences: Python's ssl can set one "
                             "curve, not an order of several; give one of "
                             f"{', '.join(_CURVES)}")
    try:
        context.set_ecdh_curve(_CURVES[names[0]])
    except (ValueError, ssl.SSLError):
        raise WebConfigError(f"tls_server_config.curve_preferences: {names[0]} is not "
                             f"available in this Python's OpenSSL") from None


def _duration(value: Any, where: str) -> float:
    match = _DURATION.fullmatch(value) if isinstance(value, str) and value else None
    if match is None:
        raise WebConfigError(f"{where}: expected a duration such as 1s or 100ms, got {value!r}")
    return sum(int(n) * unit for n, unit in zip(match.groups(), _DURATION_UNITS, strict=True)
               if n)


def _rate_limit(data: dict[str, Any]) -> tuple[float, int] | None:
    """rate_limit (exporter-toolkit): a token bucket of `burst` requests, refilled one per
    `interval`; no interval (or 0) is no limit."""
    _unknown(data, {"interval", "burst"}, "rate_limit")
    if not data.get("interval"):
        return None
    interval = _duration(data["interval"], "rate_limit.interval")
    burst = data.get("burst")
    if isinstance(burst, bool) or not isinstance(burst, int) or burst < 1:
        raise WebConfigError("rate_limit.burst: expected a whole number of requests, at least 1")
    return (interval, burst) if interval > 0 else None


def _users(data: dict[str, Any]) -> tuple[tuple[str, bytes], ...]:
    users = []
    for user, hashed in data.items():
        if not isinstance(user, str) or not isinstance(hashed, str):
            raise WebConfigError("basic_auth_users: expected user: bcrypt-hash pairs")
        if not hashed.startswith(("$2a$", "$2b$", "$2y$")):
            raise WebConfigError(f"basic_auth_users.{user}: not a bcrypt hash")
        users.append((user, hashed.encode()))
    return tuple(users)


def _headers(data: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    _unknown(data, _HTTP_KEYS, "http_server_config")
    headers = _mapping(data.get("headers"), "http_server_config.headers")
    for name, value in headers.items():
        if str(name).lower() not in _ALLOWED_HEADERS:
            raise WebConfigError(f"http_server_config.headers: header {name!r} is not allowed")
        if not isinstance(value, str) or not _PRINTABLE.fullmatch(value):
            raise WebConfigError(f"http_server_config.headers.{name}: expected a one-line string "
                                 "without control characters")
    return tuple((str(k), v) for k, v in headers.items())


def load_web_config(path: str) -> WebConfig:
    """Parse and check a web config file; relative paths are relative to the file."""
    if "\x00" in path:
        raise WebConfigError(f"{path!r} is not a file name (it holds a NUL byte)")
    try:
        with open(path, encoding="utf-8") as handle:
            data = yaml.safe_load(handle)
    except OSError as err:
        raise WebConfigError(f"cannot read {path}: {err.strerror}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise WebConfigError(f"invalid YAML: {str(err).splitlines()[0]}") from None
    data = _mapping(data, "top level")
    _unknown(data, {"tls_server_config", "http_server_config", "basic_auth_users",
                    "rate_limit"}, "top level")
    tls = _mapping(data.get("tls_server_config"), "tls_server_config")
    context, sans = _tls(tls, os.path.dirname(os.path.abspath(path)))
    return WebConfig(
        ssl_context=context,
        users=_users(_mapping(data.get("basic_auth_users"), "basic_auth_users")),
        headers=_headers(_mapping(data.get("http_server_config"), "http_server_config")),
        allowed_sans=sans,
        rate_limit=_rate_limit(_mapping(data.get("rate_limit"), "rate_limit")),
        files=(path, *_named(tls, path)),
    )


def _named(tls: dict[str, Any], path: str) -> list[str]:
    base = os.path.dirname(os.path.abspath(path))
    return [os.path.join(base, tls[key]) for key in ("cert_file", "key_file", "client_ca_file")
            if isinstance(tls.get(key), str) and "\x00" not in tls[key]]


def _files_named_by(path: str) -> tuple[str, ...]:
    """The files a web config file names, read as best it can be (it may not load)."""
    try:
        with open(path, encoding="utf-8") as handle:
            data = yaml.safe_load(handle)
        tls = data.get("tls_server_config") if isinstance(data, dict) else None
        return (path, *_named(tls, path)) if isinstance(tls, dict) else (path,)
    except (OSError, yaml.YAMLError, UnicodeDecodeError, ValueError):
        return (path,)


class _Bucket:
    """A token bucket: `burst` tokens, one more every `interval` seconds."""

    def __init__(self, interval: float, burst: int, clock: Callable[[], float]) -> None:
        self.interval, self.burst, self._clock = interval, burst, clock
        self._tokens, self._at = float(burst), clock()

    def take(self) -> bool:
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._at) / self.interval)
        self._at = now
        if self._tokens >= 1:
            self._tokens -= 1
            return True
        return False


class WebConfigWatcher:
    """The current web config, re-read when the file or a certificate it names changes
    (looked at once a second once `start()`ed); basic auth and the rate limit."""

    def __init__(self, path: str, clock: Callable[[], float] = time.monotonic) -> None:
        self.path = path
        self._clock = clock
        self._lock = threading.Lock()
        self._config = load_web_config(path)  # raises WebConfigError at start-up
        self._stamp = self._fingerprint(self._config.files)
        self._watched = self._config.files
        self._accepted: OrderedDict[bytes, None] = OrderedDict()
        self._rejected: OrderedDict[bytes, None] = OrderedDict()
        self._bucket: tuple[tuple[float, int], _Bucket] | None = None
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    @staticmethod
    def _fingerprint(files: tuple[str, ...]) -> tuple[Any, ...]:
        stamps: list[tuple[str, int | None, int | None, int | None]] = []
        for name in files:
            try:
                info = os.stat(name)
                stamps.append((name, info.st_mtime_ns, info.st_size, info.st_ino))
            except (OSError, ValueError):
                stamps.append((name, None, None, None))
        return tuple(stamps)

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._watch, name="web-config", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(5)

    def _watch(self) -> None:
        while not self._stopping.wait(CHECK_INTERVAL):
            try:
                self.check()
            except Exception:  # the watcher must outlive a surprise; the last config stays
                log.exception("web config check failed")

    def check(self) -> None:
        """Reload if a watched file changed (a stat per file otherwise)."""
        if self._fingerprint(self._watched) == self._stamp:
            return
        watched = _files_named_by(self.path)
        stamp = self._fingerprint(watched)
        try:
            config = load_web_config(self.path)
        except WebConfigError as err:
            log.error("web config not reloaded; keeping the last good one",
                      extra=fields(path=self.path, error=str(err)))
            self._watched, self._stamp = watched, stamp
            return
        with self._lock:
            self._config = config
        # The stamp taken before loading: a file changed while it loaded is loaded again.
        self._watched = config.files
        self._stamp = stamp if config.files == watched else self._fingerprint(config.files)
        log.info("web config reloaded", extra=fields(path=self.path))

    def current(self) -> WebConfig:
        return self._config

    def allow(self, config: WebConfig) -> bool:
        """A token from the rate limit's bucket (kept while rate_limit stays the same)."""
        if config.rate_limit is None:
            return True
        with self._lock:
            if self._bucket is None or self._bucket[0] != config.rate_limit:
                self._bucket = (config.rate_limit, _Bucket(*config.rate_limit, self._clock))
            return self._bucket[1].take()

    @staticmethod
    def _credentials(config: WebConfig, header: str | None) -> tuple[str, bytes, bytes,
                                                                      bool] | None:
        """(user, password, hash to check it against, user known) of a Basic header."""
        if not header or not header.startswith("Basic "):
            return None
        try:
            user, _, password = b64decode(header[6:], validate=True).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return None
        known = dict(config.users)
        return user, password.encode(), known.get(user, _DUMMY_HASH), user in known

    @staticmethod
    def _key(user: str, password: bytes, hashed: bytes) -> bytes:
        return hashlib.sha256(b"\0".join((user.encode(), password, hashed))).digest()

    def uncached(self, config: WebConfig, header: str | None) -> bool:
        """Whether checking `header` would run bcrypt (no answer kept for it)."""
        if not config.users:
            return False
        credentials = self._credentials(config, header)
        if credentials is None:
            return False
        key = self._key(*credentials[:3])
        with self._lock:
            return key not in self._accepted and key not in self._rejected

    def authorized(self, config: WebConfig, header: str | None) -> bool:
        """Basic auth: bcrypt against the user's hash (a dummy one for an unknown user, so that
        a wrong user costs as much as a wrong password); answers are kept, successes and
        failures apart."""
        if not config.users:
            return True
        credentials = self._credentials(config, header)
        if credentials is None:
            return False
        user, password, hashed, known = credentials
        key = self._key(user, password, hashed)
        with self._lock:
            if key in self._accepted:
                self._accepted.move_to_end(key)
                return True
            if key in self._rejected:
                return False
        try:  # bcrypt refuses passwords over 72 bytes (as Go's does)
            ok = bcrypt.checkpw(password, hashed) and known
        except ValueError:
            ok = False
        with self._lock:
            kept, size = (self._accepted, _ACCEPTED_SIZE) if ok else (self._rejected,
                                                                       _REJECTED_SIZE)
            kept[key] = None
            while len(kept) > size:
                kept.popitem(last=False)
        return ok
