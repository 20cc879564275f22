"""Reading fields of API answers (as botocore parses them), with errors that name the field.
An absent field is None, never a fake 0."""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from exporter.collectors.base import MappingError


def text(data: Mapping[str, Any], key: str, default: str = "") -> str:
    value = data.get(key, default)
    if value is None:
        return default
    if not isinstance(value, str):
        raise MappingError(f"{key}: expected a string, got {type(value).__name__}")
    return value


def number(data: object, key: str) -> float | None:
    if not isinstance(data, Mapping) or data.get(key) is None:
        return None
    value = data[key]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise MappingError(f"{key}: expected a number, got {type(value).__name__}")
    return finite(key, value)


def finite(key: str, value: int | float | str) -> float:
    try:
        result = float(value)
    except OverflowError:
        raise MappingError(f"{key}: number out of range") from None
    except ValueError:
        raise MappingError(f"{key}: not a decimal number: {value!r}") from None
    if not math.isfinite(result):
        raise MappingError(f"{key}: not a finite number")
    return result


def timestamp(data: object, key: str) -> float | None:
    if not isinstance(data, Mapping) or data.get(key) is None:
        return None
    value = data[key]
    if isinstance(value, datetime):
        return value.timestamp()
    raise MappingError(f"{key}: expected a timestamp, got {type(value).__name__}")
