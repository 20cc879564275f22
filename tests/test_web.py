"""--web.config.file: real TLS with certificates made here, mTLS, basic auth, reloads."""

from __future__ import annotations

import base64
import logging
import re
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import bcrypt
import pytest
import yaml

from exporter.demo.simulator import Simulator, make_job
from exporter.web.server import HttpServer
from exporter.web.webconfig import WebConfigError, WebConfigWatcher, load_web_config
from tests.certs import Authority
from tests.conftest import REPO, ExporterProcess, exporter_env, wait_for

Start = Callable[..., ExporterProcess]
PASSWORD = "correct horse battery staple"
NEW_PASSWORD = "tr0ub4dor&3"


def bcrypt_hash(password: str) -> str:
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()


def write(path: Path, data: object) -> Path:
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def get(url: str, context: ssl.SSLContext | None = None,
        password: str | None = None) -> tuple[int, dict[str, str]]:
    request = urllib.request.Request(url)
    if password is not None:
        token = base64.b64encode(f"prometheus:{password}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=10, context=context) as response:
            response.read()
            return response.status, dict(response.headers)
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers)


@pytest.fixture
def ca(tmp_path: Path) -> Authority:
    return Authority(tmp_path, "test-ca")


ServeWeb = Callable[[Path], HttpServer]


def hello(environ: dict[str, object], start: Callable[..., object]) -> list[bytes]:
    start("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "3")])
    return [b"hi\n"]


@pytest.fixture
def serve_web() -> Iterator[ServeWeb]:
    """An in-process HttpServer on 127.0.0.1 with a web config file (watched once a second)."""
    servers: list[HttpServer] = []

    def make(config: Path) -> HttpServer:
        server = HttpServer("127.0.0.1", 0, hello, WebConfigWatcher(str(config)))
        server.start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()


def plain_status(server: HttpServer, path: str) -> int:
    return get(f"http://{server.address}{path}")[0]


def client_context(ca: Authority, cert: tuple[Path, Path] | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca.path))
    if cert:
        context.load_cert_chain(*map(str, cert))
    return context


def test_tls_and_basic_auth(sim: Simulator, start: Start, ca: Authority, tmp_path: Path) -> None:
    sim.put_job("eu-west-1", make_job("j1", "scan", "RUNNING"))
    cert, key = ca.issue("exporter", server=True)
    config = write(tmp_path / "web.yml", {
        "tls_server_config": {"cert_file": str(cert), "key_file": str(key)},
        "basic_auth_users": {"prometheus": bcrypt_hash(PASSWORD)},
        "http_server_config": {"headers": {"X-Frame-Options": "deny"}},
    })
    exporter = start(f"--web.config.file={config}")
    base, context = f"https://{exporter.address}", client_context(ca)
    assert "tls=True" in exporter.logs()

    status, headers = get(f"{base}/metrics", context, PASSWORD)
    assert status == 200
    assert headers["X-Frame-Options"] == "deny"
    for password in ("wrong", None):
        status, headers = get(f"{base}/metrics", context, password)
        assert status == 401
        assert headers["WWW-Authenticate"].startswith('Basic realm="macie-exporter"')
    assert get(f"{base}/", context)[0] == 401
    assert get(f"{base}/healthz", context)[0] == 200  # probes stay open (documented)
    assert get(f"{base}/readyz", context)[0] in (200, 503)
    assert get(f"{base}/-/healthy", context)[0] == 200  # Prometheus' names for them too
    assert get(f"{base}/-/ready", context)[0] in (200, 503)
    with pytest.raises((urllib.error.URLError, ConnectionError)):
        get(f"http://{exporter.address}/metrics", None, PASSWORD)  # plain HTTP is refused
    strict = ssl.create_default_context()  # a client that does not trust our CA
    with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
        get(f"{base}/metrics", strict, PASSWORD)

    # No secret reaches the logs, even at debug level.
    assert exporter.stop() == 0
    logs = exporter.logs()
    for secret in (PASSWORD, "wrong", base64.b64encode(f"prometheus:{PASSWORD}".encode()).decode(),
                   "Authorization", "test-secret", "AKIATESTEXAMPLE00001"):
        assert secret not in logs, secret


def test_mutual_tls(sim: Simulator, start: Start, ca: Authority, tmp_path: Path) -> None:
    cert, key = ca.issue("exporter", server=True)
    config = write(tmp_path / "web.yml", {"tls_server_config": {
        "cert_file": str(cert), "key_file": str(key), "client_ca_file": str(ca.path),
        "client_auth_type": "RequireAndVerifyClientCert", "min_version": "TLS12"}})
    exporter = start(f"--web.config.file={config}")
    base = f"https://{exporter.address}/metrics"
    assert get(base, client_context(ca, ca.issue("prometheus", server=False)))[0] == 200
    with pytest.raises((urllib.error.URLError, ssl.SSLError, ConnectionError)):
        get(base, client_context(ca))  # no client certificate
    (tmp_path / "other").mkdir()
    other = Authority(tmp_path / "other", "other-ca")
    with pytest.raises((urllib.error.URLError, ssl.SSLError, ConnectionError)):
        get(base, client_context(ca, other.issue("intruder", server=False)))


def test_web_config_is_reread(sim: Simulator, start: Start, tmp_path: Path) -> None:
    config = write(tmp_path / "web.yml",
                   {"basic_auth_users": {"prometheus": bcrypt_hash(PASSWORD)}})
    exporter = start(f"--web.config.file={config}")
    url = f"http://{exporter.address}/metrics"
    assert get(url, password=PASSWORD)[0] == 200
    time.sleep(0.01)
    write(config, {"basic_auth_users": {"prometheus": bcrypt_hash(NEW_PASSWORD)}})
    wait_for(lambda: get(url, password=NEW_PASSWORD)[0] == 200, what="the new password")
    assert get(url, password=PASSWORD)[0] == 401
    assert 'msg="web config reloaded"' in exporter.logs()
    config.write_text("basic_auth_users: [not, a, mapping", encoding="utf-8")  # broken
    # The files are looked at once a second, off the request path.
    wait_for(lambda: get(url, password=NEW_PASSWORD)[0] == 200  # the last good config stays
             and "web config not reloaded" in exporter.logs(), what="the reload error")
    assert exporter.logs().count("web config not reloaded") == 1  # logged once per change
    assert exporter.proc.poll() is None


@pytest.mark.parametrize(("config", "message"), [
    ({"tls_server_config": {"cert_file": "x.crt"}}, "tls_server_config.key_file: missing"),
    ({"tls_server_config": {"cert_file": "/nope.crt", "key_file": "/nope.key"}},
     "tls_server_config.cert_file/key_file: cannot load"),
    ({"tls_server": {}}, "top level: unknown key tls_server"),
    ({"basic_auth_users": {"u": "plaintext"}}, "basic_auth_users.u: not a bcrypt hash"),
    ({"http_server_config": {"headers": {"Server": "x"}}}, "header 'Server' is not allowed"),
    ({"http_server_config": {"h2": True}}, "http_server_config: unknown key h2"),
])
def test_bad_web_configs_name_the_key(tmp_path: Path, config: object, message: str) -> None:
    with pytest.raises(WebConfigError, match=message.replace("[", r"\[")):
        load_web_config(str(write(tmp_path / "web.yml", config)))


def test_tls_settings_are_checked(tmp_path: Path, ca: Authority) -> None:
    cert, key = ca.issue("exporter", server=True)
    tls = {"cert_file": str(cert), "key_file": str(key)}
    assert load_web_config(str(write(tmp_path / "ok.yml", {"tls_server_config": tls})))
    for extra, message in [
        ({"min_version": "TLS14"}, "min_version: expected one of TLS10, TLS11, TLS12, TLS13"),
        ({"client_auth_type": "RequireAnyClientCert"}, "RequireAnyClientCert is not supported"),
        ({"client_auth_type": "RequireAndVerifyClientCert"}, "client_ca_file: required"),
        ({"client_auth_type": "Sometimes"}, "client_auth_type: unknown value"),
    ]:
        with pytest.raises(WebConfigError, match=message):
            load_web_config(str(write(tmp_path / "bad.yml", {"tls_server_config":
                                                              {**tls, **extra}})))


def test_invalid_web_config_at_start_exits_2(tmp_path: Path) -> None:
    config = write(tmp_path / "web.yml", {"basic_auth_users": {"u": "plaintext"}})
    result = subprocess.run(
        [sys.executable, "-m", "exporter", f"--web.config.file={config}",
         "--aws.regions=eu-west-1", "--web.listen-address=127.0.0.1:0"],
        cwd=REPO, env=exporter_env(), capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        "macie-exporter: error: --web.config.file: basic_auth_users.u: not a bcrypt hash")
    assert "Traceback" not in result.stderr


def test_rate_limit_is_a_token_bucket_answering_429(serve_web: ServeWeb, tmp_path: Path) -> None:
    config = write(tmp_path / "web.yml", {"rate_limit": {"interval": "1h", "burst": 2}})
    server = serve_web(config)
    assert [plain_status(server, "/") for _ in range(3)] == [200, 200, 429]
    assert plain_status(server, "/healthz") == 200  # probes are not limited
    assert plain_status(server, "/-/healthy") == 200
    time.sleep(0.01)
    write(config, {"rate_limit": {"interval": "1h", "burst": 1}})  # a new bucket
    wait_for(lambda: plain_status(server, "/") == 200, what="the new rate limit")
    assert plain_status(server, "/") == 429


def test_token_bucket_refills_one_token_per_interval(tmp_path: Path) -> None:
    now = [0.0]
    config = write(tmp_path / "web.yml", {"rate_limit": {"interval": "100ms", "burst": 3}})
    web = WebConfigWatcher(str(config), clock=lambda: now[0])
    current = web.current()
    assert current.rate_limit == (0.1, 3)
    assert [web.allow(current) for _ in range(4)] == [True, True, True, False]
    now[0] = 0.25  # two tokens back, not three
    assert [web.allow(current) for _ in range(3)] == [True, True, False]
    now[0] = 100.0  # never more than the burst
    assert [web.allow(current) for _ in range(4)] == [True, True, True, False]


def test_wrong_passwords_do_not_evict_a_valid_one(tmp_path: Path) -> None:
    config = write(tmp_path / "web.yml",
                   {"basic_auth_users": {"prometheus": bcrypt_hash(PASSWORD)}})
    web = WebConfigWatcher(str(config))
    current = web.current()

    def header(password: str) -> str:
        return "Basic " + base64.b64encode(f"prometheus:{password}".encode()).decode()

    assert web.uncached(current, header(PASSWORD))
    assert web.authorized(current, header(PASSWORD))
    for n in range(600):  # more than the successes kept (256)
        assert not web.authorized(current, header(f"wrong-{n}"))
    assert not web.uncached(current, header(PASSWORD))  # still known: no bcrypt, fast lane
    assert not web.uncached(current, header("wrong-599"))  # a failure is kept too
    assert web.uncached(current, header("never-tried"))
    assert not web.authorized(current, header("x" * 100))  # over bcrypt's 72 bytes: a 401


def test_the_web_config_is_parsed_again_only_when_a_file_changed(
        tmp_path: Path, ca: Authority, caplog: pytest.LogCaptureFixture) -> None:
    cert, key = ca.issue("exporter", server=True)
    config = write(tmp_path / "web.yml", {"tls_server_config": {
        "cert_file": str(cert), "key_file": str(key)}})
    web = WebConfigWatcher(str(config))
    first = web.current()
    assert set(first.files) == {str(config), str(cert), str(key)}
    caplog.set_level(logging.INFO, "exporter")
    for _ in range(5):
        web.check()
    assert web.current() is first and "reloaded" not in caplog.text
    time.sleep(0.01)
    ca.issue("renewed", server=True, filename="exporter")  # the certificate changes
    web.check()
    assert web.current() is not first and caplog.text.count("web config reloaded") == 1


@pytest.mark.parametrize(("tls", "message"), [
    ({"cipher_suites": ["TLS_FANCY"]}, "cipher_suites: unknown cipher suite 'TLS_FANCY'"),
    ({"cipher_suites": ["TLS_RSA_WITH_RC4_128_SHA"]},
     "TLS_RSA_WITH_RC4_128_SHA is not available in this Python's OpenSSL"),
    ({"curve_preferences": ["CurveP256", "X25519"]},
     "curve_preferences: Python's ssl can set one curve, not an order of several"),
    ({"curve_preferences": ["CurveP999"]}, "curve_preferences: unknown curve 'CurveP999'"),
    ({"prefer_server_cipher_suites": "yes"}, "prefer_server_cipher_suites: expected true"),
])
def test_tls_settings_python_cannot_apply_are_refused(tmp_path: Path, ca: Authority,
                                                      tls: dict[str, object],
                                                      message: str) -> None:
    cert, key = ca.issue("exporter", server=True)
    with pytest.raises(WebConfigError, match=re.escape(message)):
        load_web_config(str(write(tmp_path / "web.yml", {"tls_server_config": {
            "cert_file": str(cert), "key_file": str(key), **tls}})))


@pytest.mark.parametrize(("rate_limit", "message"), [
    ({"interval": "soon", "burst": 1}, "rate_limit.interval: expected a duration"),
    ({"interval": "1s"}, "rate_limit.burst: expected a whole number"),
    ({"interval": "1s", "burst": 0}, "rate_limit.burst: expected a whole number"),
    ({"interval": "1s", "burst": 1, "per": "ip"}, "rate_limit: unknown key per"),
])
def test_bad_rate_limits_name_the_key(tmp_path: Path, rate_limit: object, message: str) -> None:
    with pytest.raises(WebConfigError, match=message):
        load_web_config(str(write(tmp_path / "web.yml", {"rate_limit": rate_limit})))


def test_cipher_suites_and_a_curve_are_applied(serve_web: ServeWeb, tmp_path: Path,
                                               ca: Authority) -> None:
    cert, key = ca.issue("exporter", server=True)
    config = write(tmp_path / "web.yml", {"tls_server_config": {
        "cert_file": str(cert), "key_file": str(key), "max_version": "TLS12",
        "cipher_suites": ["TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384", "TLS_AES_128_GCM_SHA256"],
        "curve_preferences": ["CurveP384"]}})
    server = serve_web(config)
    context = client_context(ca)
    host, _, port = server.address.rpartition(":")
    with socket.create_connection((host, int(port)), timeout=10) as raw, \
            context.wrap_socket(raw, server_hostname="127.0.0.1") as sock:
        cipher = sock.cipher()
        assert cipher is not None and cipher[0] == "ECDHE-ECDSA-AES256-GCM-SHA384"
    only_other = client_context(ca)
    only_other.set_ciphers("ECDHE-ECDSA-AES128-GCM-SHA256")
    only_other.maximum_version = ssl.TLSVersion.TLSv1_2
    with pytest.raises(ssl.SSLError), socket.create_connection((host, int(port)),
                                                               timeout=10) as raw:
        only_other.wrap_socket(raw, server_hostname="127.0.0.1")
    curves = client_context(ca)
    curves.maximum_version = ssl.TLSVersion.TLSv1_2
    curves.set_ecdh_curve("prime256v1")  # a client offering P-256 only
    with pytest.raises(ssl.SSLError), socket.create_connection((host, int(port)),
                                                               timeout=10) as raw:
        curves.wrap_socket(raw, server_hostname="127.0.0.1")


def test_a_curve_list_python_cannot_apply_exits_2(tmp_path: Path, ca: Authority) -> None:
    cert, key = ca.issue("exporter", server=True)
    config = write(tmp_path / "web.yml", {"tls_server_config": {
        "cert_file": str(cert), "key_file": str(key),
        "curve_preferences": ["X25519", "CurveP256"]}})
    result = subprocess.run(
        [sys.executable, "-m", "exporter", f"--web.config.file={config}",
         "--aws.regions=eu-west-1", "--web.listen-address=127.0.0.1:0"],
        cwd=REPO, env=exporter_env(), capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2
    assert "curve_preferences: Python's ssl can set one curve" in result.stderr
    assert "Traceback" not in result.stderr
