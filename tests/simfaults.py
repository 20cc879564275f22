"""Fault injection for tests: a simulator whose answers `Faults` can replace or delay."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from exporter.demo.simulator import (
    MAX_PAGE_SIZE,
    STS_OPERATIONS,
    Answer,
    Call,
    Simulator,
    error_answer,
    json_answer,
    json_error,
    xml_error,
)


@dataclass
class Faults:
    """What to break; tests change these fields directly (reads happen under the lock).

    Every field but `credential_ttl` applies to Macie and Organizations calls in `regions` only
    (errors in each service's own protocol); STS calls see `denied` and the failure and
    throttling fields, in every region.
    """

    latency: float = 0.0  # seconds added to every request
    slow: set[str] | None = None  # which operations `latency` applies to (None: all)
    page_size_cap: int | None = None  # serve at most this many items per page
    throttle_next: int = 0  # the next N matching requests get ThrottlingException
    throttle_every: int = 0  # every Nth matching request is throttled (2 → half)
    fail_next: int = 0  # the next N matching requests fail with fail_status/fail_code
    fail_status: int = 500
    fail_code: str = "InternalServerException"
    fail_all: bool = False  # every matching request fails with fail_status/fail_code
    operations: set[str] | None = None  # which operations the above apply to (None: all)
    denied: set[str] = field(default_factory=set)  # operations answered AccessDeniedException
    vanished: set[str] = field(default_factory=set)  # job ids listed, but describe → 404
    describe_errors: dict[str, tuple[int, str]] = field(default_factory=dict)  # per job id
    credential_ttl: float | None = None  # lifetime of AssumeRole credentials issued from now
    regions: set[str] | None = None  # the regions every fault applies to (None: all)
    # Malformed answers, sent with HTTP 200 as they are: the whole list answer, or per job id.
    raw_list: bytes | None = None
    raw_describe: dict[str, bytes] = field(default_factory=dict)
    # Scripted list pages: called with the request's nextToken, returns the answer to send.
    list_script: Callable[[str | None], dict[str, Any]] | None = None
    _seen: int = 0

    def applies(self, region: str) -> bool:
        return self.regions is None or region in self.regions

    def pick(self, operation: str) -> tuple[int, str] | None:
        """The (status, code) this request should fail with, if any."""
        if operation in self.denied:
            return 403, "AccessDeniedException" if operation != "AssumeRole" else "AccessDenied"
        if self.operations is not None and operation not in self.operations:
            return None
        self._seen += 1
        if self.fail_all:
            return self.fail_status, self.fail_code
        if self.fail_next > 0:
            self.fail_next -= 1
            return self.fail_status, self.fail_code
        if self.throttle_next > 0:
            self.throttle_next -= 1
            return 429, "ThrottlingException"
        if self.throttle_every and self._seen % self.throttle_every == 0:
            return 429, "ThrottlingException"
        return None


class FaultySimulator(Simulator):
    """The simulator with `faults`, applied through its `_intercept` hook."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.faults = Faults()

    def _intercept(self, call: Call) -> Answer | None:
        if call.operation in STS_OPERATIONS:
            return self._sts_fault(call)
        with self.lock:
            applies = self.faults.applies(call.region)
            fault = self.faults.pick(call.operation) if applies else None
            slow = self.faults.slow is None or call.operation in self.faults.slow
            latency = self.faults.latency if applies and slow else 0.0
        if latency:
            time.sleep(latency)
        if fault:
            return error_answer(call.operation, fault[0], fault[1], f"simulated {fault[1]}")
        if not applies:
            return None
        if call.operation == "ListClassificationJobs":
            return self._list_fault(call)
        if call.operation == "DescribeClassificationJob":
            return self._describe_fault(call)
        return None

    def _sts_fault(self, call: Call) -> Answer | None:
        with self.lock:
            if call.operation == "AssumeRole" and self.faults.credential_ttl is not None:
                self.credential_ttl = self.faults.credential_ttl
            fault = self.faults.pick(call.operation)
        return xml_error(fault[0], fault[1], f"simulated {fault[1]}") if fault else None

    def _list_fault(self, call: Call) -> Answer | None:
        with self.lock:
            raw, script, cap = (self.faults.raw_list, self.faults.list_script,
                                self.faults.page_size_cap)
        if raw is not None:
            return 200, {"Content-Type": "application/json"}, raw
        if script is not None:
            return json_answer(200, script(call.params.get("nextToken")))
        size = call.params.get("maxResults", 100)
        if cap is not None and isinstance(size, int) and cap < size <= MAX_PAGE_SIZE:
            return self._answer(replace(call, params={**call.params, "maxResults": cap}))
        return None

    def _describe_fault(self, call: Call) -> Answer | None:
        job_id = call.params["jobId"]
        with self.lock:
            forced = self.faults.describe_errors.get(job_id)
            raw = self.faults.raw_describe.get(job_id)
            vanished = job_id in self.faults.vanished
        if forced:
            return json_error(forced[0], forced[1], f"simulated {forced[1]} for {job_id}")
        if raw:
            return 200, {"Content-Type": "application/json"}, raw
        if vanished:
            return json_error(404, "ResourceNotFoundException", f"job {job_id} not found")
        return None
