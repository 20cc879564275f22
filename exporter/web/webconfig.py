"""`--web.config.file` in the Prometheus exporter-toolkit format: TLS, client certs, basic auth.

The file (and the certificates it names) is checked for changes on every request, as the
toolkit re-reads it; a change that does not load keeps the last good configuration and is
logged once.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import ssl
import threading
from base64 import b64decode
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import bcrypt
import yaml

from exporter.logs import fields

log = logging.getLogger(__name__)

_TLS_KEYS = {"cert_file", "key_file", "client_auth_type", "client_ca_file", "cipher_suites",
             "curve_preferences", "min_version", "max_version", "prefer_server_cipher_suites",
             "client_allowed_sans", "cert", "key"}
_IGNORED_TLS_KEYS = ("cipher_suites", "curve_preferences", "prefer_server_cipher_suites")
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
    for key in _IGNORED_TLS_KEYS:
        if key in data:
            log.warning("web config key ignored; Python's TLS defaults apply",
                        extra=fields(key=f"tls_server_config.{key}"))
    sans = data.get("client_allowed_sans") or []
    if not isinstance(sans, list) or not all(isinstance(s, str) for s in sans):
        raise WebConfigError("tls_server_config.client_allowed_sans: expected a list of names")
    return context, tuple(sans)


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
        if not isinstance(value, str) or "\n" in value or "\r" in value:
            raise WebConfigError(f"http_server_config.headers.{name}: expected a one-line string")
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
    _unknown(data, {"tls_server_config", "http_server_config", "basic_auth_users"}, "top level")
    context, sans = _tls(_mapping(data.get("tls_server_config"), "tls_server_config"),
                         os.path.dirname(os.path.abspath(path)))
    return WebConfig(
        ssl_context=context,
        users=_users(_mapping(data.get("basic_auth_users"), "basic_auth_users")),
        headers=_headers(_mapping(data.get("http_server_config"), "http_server_config")),
        allowed_sans=sans,
    )


class WebConfigWatcher:
    """The current web config; re-read when the file or a certificate it names changes."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._config = load_web_config(path)  # raises WebConfigError at start-up
        self._stamp = self._fingerprint()
        self._bad_stamp: tuple[Any, ...] | None = None
        self._auth_cache: OrderedDict[bytes, bool] = OrderedDict()

    def _fingerprint(self) -> tuple[Any, ...]:
        stamps: list[tuple[str, int | None, int | None, int | None]] = []
        for name in self._files():
            try:
                info = os.stat(name)
                stamps.append((name, info.st_mtime_ns, info.st_size, info.st_ino))
            except OSError:
                stamps.append((name, None, None, None))
        return tuple(stamps)

    def _files(self) -> list[str]:
        files = [self.path]
        try:
            with open(self.path, encoding="utf-8") as handle:
                tls = (yaml.safe_load(handle) or {}).get("tls_server_config") or {}
            base = os.path.dirname(os.path.abspath(self.path))
            files += [os.path.join(base, tls[k]) for k in ("cert_file", "key_file",
                                                           "client_ca_file")
                      if isinstance(tls.get(k), str)]
        except (OSError, yaml.YAMLError, UnicodeDecodeError, AttributeError):
            pass
        return files

    def current(self) -> WebConfig:
        stamp = self._fingerprint()
        with self._lock:
            if stamp != self._stamp and stamp != self._bad_stamp:
                try:
                    self._config = load_web_config(self.path)
                    self._stamp, self._bad_stamp = stamp, None
                    self._auth_cache.clear()
                    log.info("web config reloaded", extra=fields(path=self.path))
                except WebConfigError as err:
                    self._bad_stamp = stamp
                    log.error("web config not reloaded; keeping the last good one",
                              extra=fields(path=self.path, error=str(err)))
            return self._config

    def authorized(self, config: WebConfig, header: str | None) -> bool:
        """Basic auth check, constant-time in the user name and password."""
        if not config.users:
            return True
        if not header or not header.startswith("Basic "):
            return False
        try:
            user, _, password = b64decode(header[6:], validate=True).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return False
        known = dict(config.users)
        hashed = known.get(user, _DUMMY_HASH)
        # bcrypt is slow on purpose; remember answers for recently seen credentials.
        key = hashlib.sha256(b"\0".join((user.encode(), password.encode(), hashed))).digest()
        with self._lock:
            cached = self._auth_cache.get(key)
        if cached is None:
            cached = bcrypt.checkpw(password.encode(), hashed) and user in known
            with self._lock:
                self._auth_cache[key] = cached
                while len(self._auth_cache) > 256:
                    self._auth_cache.popitem(last=False)
        return hmac.compare_digest(b"1" if cached else b"0", b"1")
