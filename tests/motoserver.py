"""moto in server mode on loopback (an independent implementation of Organizations, CloudWatch
Logs and IAM), for the tests that check the exporter against something other than the
simulator."""

from __future__ import annotations

import socket
import urllib.request
from typing import Any

import boto3

KEY, SECRET = "AKIATESTEXAMPLE00001", "test-secret"  # moto takes any key until IAM is on


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Moto:
    """moto's server on loopback; its state outlives a stop() and start() on the same port."""

    def __init__(self) -> None:
        from moto.server import ThreadedMotoServer

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._server_class = ThreadedMotoServer
        self._server: Any = None

    def start(self) -> None:
        self._server = self._server_class(ip_address="127.0.0.1", port=self.port,
                                          verbose=False)
        self._server.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    def post(self, path: str, body: bytes = b"") -> None:
        request = urllib.request.Request(f"{self.url}{path}", data=body, method="POST",
                                         headers={"Content-Type": "text/plain"})
        with urllib.request.urlopen(request, timeout=10):
            pass

    def client(self, service: str, region: str = "us-east-1", key: str = KEY,
               secret: str = SECRET) -> Any:
        return boto3.client(service, region_name=region,  # type: ignore[call-overload]
                            endpoint_url=self.url, aws_access_key_id=key,
                            aws_secret_access_key=secret)

    def organizations(self) -> Any:
        return self.client("organizations")
