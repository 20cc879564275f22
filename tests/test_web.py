"""--web.config.file: real TLS with certificates made here, mTLS, basic auth, reloads."""

from __future__ import annotations

import base64
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import bcrypt
import pytest
import yaml

from exporter.demo.simulator import Simulator, make_job
from exporter.web.webconfig import WebConfigError, load_web_config
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
    # The file is checked on each request, as the exporter-toolkit does.
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
