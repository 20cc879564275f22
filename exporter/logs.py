"""One line per event, as logfmt (`level=warn msg="refresh failed" region=...`) or JSON."""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
from datetime import UTC, datetime
from typing import Any, TextIO

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warn": logging.WARNING,
           "error": logging.ERROR}
_NAMES = {logging.DEBUG: "debug", logging.INFO: "info", logging.WARNING: "warn",
          logging.ERROR: "error", logging.CRITICAL: "error"}
# Libraries whose debug output carries request headers (and so credentials): never below warn.
_QUIET = ("botocore", "boto3", "urllib3", "s3transfer", "apscheduler")


def fields(**values: Any) -> dict[str, Any]:
    """`extra=` for a log call: `log.warning("refresh failed", extra=fields(region=r))`."""
    return {"kv": values}


_logged_once: set[str] = set()
_once_lock = threading.Lock()


def log_once(action: str, message: str, **labels: str) -> None:
    """An error line naming the IAM action `action` as missing, once per process."""
    with _once_lock:
        if action in _logged_once:
            return
        _logged_once.add(action)
    logging.getLogger("exporter").error(message,
                                        extra=fields(**labels, missing_permission=action))


def _record_fields(record: logging.LogRecord) -> dict[str, Any]:
    out: dict[str, Any] = {
        "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")
        .replace("+00:00", "Z"),
        "level": _NAMES.get(record.levelno, "info"),
        "logger": record.name,
        "msg": record.getMessage(),
    }
    out.update(getattr(record, "kv", {}))
    if record.exc_info and record.levelno >= logging.ERROR:
        out["exception"] = logging.Formatter().formatException(record.exc_info)
    return out


# Characters a log line never carries raw: C0 and C1 controls, DEL, the Unicode line and
# paragraph separators, and lone surrogates (undecodable bytes kept by surrogateescape).
# A request target or a header value can hold any of them; written raw, one could forge a
# line, move the cursor of a terminal, or fail the stream's encoding.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")
_SHORT = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape_unsafe(match: re.Match[str]) -> str:
    char = match.group()
    if char in _SHORT:
        return _SHORT[char]
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def _logfmt_value(value: Any) -> str:
    text = str(value)
    # Quoted when it holds any whitespace (Unicode's too: a no-break space splits a field
    # for a reader as much as a space does), a quote, an equals sign or a backslash.
    if text and not any(c in ' ="\\' or c.isspace() for c in text) and not _UNSAFE.search(text):
        return text
    escaped = _UNSAFE.sub(_escape_unsafe, text.replace("\\", "\\\\").replace('"', '\\"'))
    return f'"{escaped}"'


def _json_unsafe(match: re.Match[str]) -> str:
    return f"\\u{ord(match.group()):04x}"


class LogfmtFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return " ".join(f"{k}={_logfmt_value(v)}" for k, v in _record_fields(record).items())


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        # json.dumps escapes C0 controls itself; DEL, C1, the separators and lone surrogates
        # (only ever inside strings) are escaped here.
        return _UNSAFE.sub(_json_unsafe, json.dumps(_record_fields(record), default=str,
                                                    ensure_ascii=False))


def setup(level: str, fmt: str, stream: TextIO = sys.stderr) -> None:
    """Configure the root logger; third-party loggers stay at warn or above."""
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter() if fmt == "json" else LogfmtFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(_LEVELS[level])
    for name in _QUIET:
        logging.getLogger(name).setLevel(max(logging.WARNING, _LEVELS[level]))
