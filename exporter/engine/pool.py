"""One bounded set of worker threads for every AWS call in the process, shared fairly.

Work is queued per owner (one owner per target). Workers take one call at a time from the
owners in turn, so a target with 10,000 describes gets its share of the workers and no more
while others wait. Within an owner, urgent calls (list pages, status checks) go before the rest
(describes), so that a target's list finishes early. Background calls (the collectors) are
queued apart and taken when no other call is waiting, or, every other turn, when the owner has
waited `BACKGROUND_MAX_WAIT` for its turn: at start-up every target's jobs come before anyone's
findings, and the collectors still run under a constant load. While `hold_background()` is true
(the exporter is not ready yet), background calls take only the turns no other call wants: at
10,200 targets the 24,833 first describes of terminal jobs otherwise took every other turn from
the 30th second on, and readiness waited for them. While `pause_background()` is true (every
target has refreshed and the snapshot that turns /readyz 200 is being rendered), no background
call starts at all: at 10,200 targets the terminal describes took every turn the finished
refreshes left, and that render, on the same GIL as 16 busy call workers, took 60-90 s instead
of 11 s. An optional token bucket per owner caps its calls per second, background ones
included; while an owner waits for a token, workers serve the others.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field

log = logging.getLogger(__name__)
Task = Callable[[], None]
# The longest a background call waits behind other calls once it is next in its ring.
BACKGROUND_MAX_WAIT = 30.0
# How often workers idle behind paused background calls look whether the pause ended.
PAUSE_POLL = 0.5


class TokenBucket:
    """`rate` tokens a second, at most `burst` saved up."""

    def __init__(self, rate: float, now: float, burst: float | None = None) -> None:
        self.rate = rate
        self.burst = max(1.0, burst if burst is not None else rate)
        self._tokens = self.burst
        self._at = now

    def _fill(self, now: float) -> None:
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = now

    def debit(self, tokens: float) -> None:
        """Pay for calls made beyond the one token taken (the balance may go below zero)."""
        self._tokens -= tokens

    def take(self, now: float) -> float:
        """Take a token and return 0, or return the seconds until one is there."""
        self._fill(now)
        if self._tokens >= 1:
            self._tokens -= 1
            return 0.0
        return (1 - self._tokens) / self.rate


@dataclass(eq=False)
class _Queue:
    owner: Hashable
    background: bool
    urgent: deque[Task] = field(default_factory=deque)
    normal: deque[Task] = field(default_factory=deque)
    scheduled: bool = False  # in its ring, or deferred
    waiting_since: float | None = None
    ready_since: float = 0.0  # when it last joined its ring

    def __bool__(self) -> bool:
        return bool(self.urgent or self.normal)


class CallPool:
    """`workers` threads running queued calls, round-robin across owners."""

    def __init__(self, workers: int, *, rate: float = 0.0,
                 on_wait: Callable[[Hashable, float], None] | None = None,
                 calls_made: Callable[[], int] | None = None,
                 hold_background: Callable[[], bool] | None = None,
                 pause_background: Callable[[], bool] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.workers = workers
        # While true, a background call that waited its limit still waits (see the docstring).
        self._hold_background = hold_background
        # While true, no background call starts (see the docstring); `wake()` when it turns
        # false, else workers look again within PAUSE_POLL.
        self._pause_background = pause_background
        self._rate = rate
        self._on_wait = on_wait
        # How many AWS calls the calling thread made since last asked: a task that makes several
        # (pages, retries) pays a token for each.
        self._calls_made = calls_made
        self._clock = clock
        self._cond = threading.Condition()
        # Per (owner, background): an owner's background calls are a queue of their own.
        self._queues: dict[tuple[Hashable, bool], _Queue] = {}
        self._buckets: dict[Hashable, TokenBucket] = {}  # per owner, background calls included
        self._ring: deque[_Queue] = deque()
        self._background: deque[_Queue] = deque()
        self._deferred: list[tuple[float, int, _Queue]] = []
        self._took_background = False  # the last turn went to a background queue
        self._order = itertools.count()
        self._threads: list[threading.Thread] = []
        self._names = itertools.count()
        self._started = False
        self._stopping = False
        self._forgotten: set[Hashable] = set()
        self.busy = 0

    def start(self) -> None:
        with self._cond:
            self._started = True
            self._grow()

    def _grow(self) -> None:
        """Start workers up to `workers` (lock held)."""
        while len(self._threads) < self.workers:
            thread = threading.Thread(target=self._work, name=f"aws-call-{next(self._names)}",
                                      daemon=True)
            thread.start()
            self._threads.append(thread)

    def resize(self, workers: int) -> None:
        """Run `workers` threads from now on (a reload): new ones start at once, surplus ones
        end after the call they are making."""
        with self._cond:
            self.workers = workers
            if self._started:
                self._grow()
            self._cond.notify_all()

    def set_rate(self, rate: float) -> None:
        """A new calls-per-second limit per owner (0: none); buckets start again full."""
        with self._cond:
            self._rate = rate
            self._buckets.clear()
            now = self._clock()
            for _, _, deferred in self._deferred:  # waiting for the old buckets' tokens
                self._join_ring(deferred, now)
            self._deferred.clear()
            for queue in self._queues.values():
                queue.waiting_since = None
            if rate > 0:
                for owner, _ in self._queues:
                    self._buckets.setdefault(owner, TokenBucket(rate, self._clock()))
            self._cond.notify_all()

    def _retiring(self) -> bool:
        """True (and the calling worker is let go) when there are more workers than wanted
        (lock held)."""
        if len(self._threads) <= self.workers:
            return False
        current = threading.current_thread()
        if current in self._threads:
            self._threads.remove(current)
        return True

    def wake(self) -> None:
        """Look again at what may run (`pause_background` may have turned false)."""
        with self._cond:
            self._cond.notify_all()

    def stop(self) -> None:
        """Drop what is queued; calls under way finish on their own (threads are daemons)."""
        with self._cond:
            self._stopping = True
            self._queues.clear()
            self._ring.clear()
            self._background.clear()
            self._deferred.clear()
            self._cond.notify_all()

    def submit(self, owner: Hashable, task: Task, *, urgent: bool = False,
               background: bool = False) -> None:
        """Queue `task` for `owner`: `urgent` before its other calls, `background` behind
        every other owner's calls (see the module's docstring)."""
        with self._cond:
            if self._stopping or owner in self._forgotten:
                return
            if self._rate > 0 and owner not in self._buckets:
                self._buckets[owner] = TokenBucket(self._rate, self._clock())
            queue = self._queues.get((owner, background))
            if queue is None:
                queue = self._queues[(owner, background)] = _Queue(owner, background)
            (queue.urgent if urgent else queue.normal).append(task)
            if not queue.scheduled:
                queue.scheduled = True
                self._join_ring(queue, self._clock())
            self._cond.notify()

    def _join_ring(self, queue: _Queue, now: float) -> None:
        queue.ready_since = now
        (self._background if queue.background else self._ring).append(queue)

    def forget(self, owner: Hashable) -> None:
        """Drop an owner's queued calls and its bucket, and refuse its calls from now on (a
        target that went away)."""
        with self._cond:
            self._forgotten.add(owner)
            self._buckets.pop(owner, None)
            for background in (False, True):
                queue = self._queues.pop((owner, background), None)
                if queue is not None:
                    queue.urgent.clear()
                    queue.normal.clear()

    def wait_idle(self, timeout: float) -> bool:
        """Wait until nothing is queued or under way (--once); False if `timeout` passed."""
        deadline = self._clock() + timeout
        with self._cond:
            while any(self._queues.values()) or self.busy:
                left = deadline - self._clock()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.05))
        return True

    def pending(self) -> int:
        with self._cond:
            return sum(len(q.urgent) + len(q.normal) for q in self._queues.values())

    def _next(self) -> tuple[Hashable, Task] | None:
        """The next call to make and its owner, or None when stopping (lock held)."""
        while not self._stopping and not self._retiring():
            now = self._clock()
            while self._deferred and self._deferred[0][0] <= now:
                _, _, deferred = heapq.heappop(self._deferred)
                self._join_ring(deferred, now)
            paused = (bool(self._background) and self._pause_background is not None
                      and self._pause_background())
            if not self._ring and (not self._background or paused):
                timeout = self._deferred[0][0] - now if self._deferred else None
                if paused:
                    timeout = PAUSE_POLL if timeout is None else min(timeout, PAUSE_POLL)
                self._cond.wait(timeout)
                continue
            # A background queue that waited its limit gets every other turn (not all of them:
            # at start-up, thousands wait about as long).
            waited = (bool(self._background) and not self._took_background and not paused
                      and self._background[0].ready_since <= now - BACKGROUND_MAX_WAIT
                      and not (self._hold_background is not None and self._hold_background()))
            ring = self._ring if self._ring and not waited else self._background
            self._took_background = ring is self._background
            queue = ring.popleft()
            if self._queues.get((queue.owner, queue.background)) is not queue or not queue:
                queue.scheduled = False  # forgotten, or emptied
                continue
            bucket = self._buckets.get(queue.owner)
            if bucket is not None:
                delay = bucket.take(now)
                if delay > 0:
                    if queue.waiting_since is None:
                        queue.waiting_since = now
                    heapq.heappush(self._deferred, (now + delay, next(self._order), queue))
                    continue
                if queue.waiting_since is not None:
                    if self._on_wait is not None:
                        try:
                            self._on_wait(queue.owner, now - queue.waiting_since)
                        except Exception:  # counting a wait must not stop a worker
                            log.exception("counting a rate-limit wait failed")
                    queue.waiting_since = None
            task = queue.urgent.popleft() if queue.urgent else queue.normal.popleft()
            if queue:
                self._join_ring(queue, now)
            else:
                # Emptied: dropped, and made again by the owner's next call. 10,200 targets'
                # queues, two deques each, held 30 MB while almost all were empty.
                queue.scheduled = False
                del self._queues[(queue.owner, queue.background)]
            return queue.owner, task
        return None

    def _work(self) -> None:
        while True:
            with self._cond:
                found = self._next()
                if found is None:
                    return
                owner, task = found
                self.busy += 1
            if self._calls_made is not None:
                self._calls_made()
            try:
                task()
            except Exception:  # a task must handle its own errors; this is a bug
                log.exception("AWS call task crashed")
            finally:
                extra = self._calls_made() - 1 if self._calls_made is not None else 0
                with self._cond:
                    self.busy -= 1
                    bucket = self._buckets.get(owner)
                    if extra > 0 and bucket is not None:
                        bucket.debit(extra)
