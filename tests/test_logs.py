"""Log lines: one line per event whatever a field holds, in logfmt and JSON."""

from __future__ import annotations

import io
import json
import logging
import re

from hypothesis import example, given
from hypothesis import strategies as st

from exporter import logs
from exporter.logs import fields

# What a hostile request can put in a logged field: any code point, surrogates included.
hostile = st.text(st.characters(min_codepoint=0, max_codepoint=0x10FFFF,
                                exclude_categories=()), max_size=40)
UNESCAPE = re.compile(r'\\(x[0-9a-f]{2}|u[0-9a-f]{4}|[\\"nrt])')


def line_for(fmt: str, value: str) -> str:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.JsonFormatter() if fmt == "json" else logs.LogfmtFormatter())
    logger = logging.getLogger(f"test.logs.{fmt}")
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.warning("http request", extra=fields(request=value, client="127.0.0.1"))
    return stream.getvalue()


def unlogfmt(text: str) -> str:
    def one(match: re.Match[str]) -> str:
        code = match.group(1)
        if code[0] in "xu":
            return chr(int(code[1:], 16))
        return {"n": "\n", "r": "\r", "t": "\t"}.get(code, code)
    return UNESCAPE.sub(one, text)


def no_raw_control(line: str) -> None:
    body = line.removesuffix("\n")
    assert "\n" not in body and "\r" not in body
    assert not re.search("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]", body), body
    body.encode("utf-8")  # never a lone surrogate for the stream to choke on


@given(hostile)
@example("\xa0")  # Unicode whitespace: unquoted, it would end the field for a reader
@example("a\u3000b")
def test_logfmt_escapes_every_control_character_and_keeps_the_value(value: str) -> None:
    line = line_for("logfmt", value)
    no_raw_control(line)
    match = re.search(r' request=("(?:[^"\\]|\\.)*"|\S*) client=127\.0\.0\.1\n$', line)
    assert match, line
    field = match.group(1)
    assert unlogfmt(field[1:-1] if field.startswith('"') else field) == value


@given(hostile)
def test_json_escapes_every_control_character_and_keeps_the_value(value: str) -> None:
    line = line_for("json", value)
    no_raw_control(line)
    assert json.loads(line)["request"] == value


def test_a_forged_line_stays_inside_its_field() -> None:
    forged = "GET /\x1b[2J\r\nts=2026-01-01T00:00:00Z level=error msg=forged"
    line = line_for("logfmt", forged)
    assert line.count("\n") == 1 and "\x1b" not in line
    assert '"GET /\\x1b[2J\\r\\nts=2026-01-01T00:00:00Z level=error msg=forged"' in line
