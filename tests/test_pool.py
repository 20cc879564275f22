"""The call pool: bounded threads, fair turns across targets, urgent calls first, rate limit."""

from __future__ import annotations

import functools
import threading

from exporter.engine.pool import BACKGROUND_MAX_WAIT, CallPool, TokenBucket
from tests.conftest import wait_for


def run_in_order(pool: CallPool, submissions: list[tuple[str, str, bool]]) -> list[str]:
    """Queue every (owner, name, urgent) before the pool starts; the order the calls ran in."""
    ran: list[str] = []
    done = threading.Event()
    for owner, name, urgent in submissions:
        def task(name: str = name) -> None:
            ran.append(name)
            if len(ran) == len(submissions):
                done.set()
        pool.submit(owner, task, urgent=urgent)
    pool.start()
    assert done.wait(10)
    pool.stop()
    return ran


def test_turns_alternate_between_targets() -> None:
    big = [("big", f"big{i}", False) for i in range(100)]
    small = [("small", f"small{i}", False) for i in range(3)]
    order = run_in_order(CallPool(1), big + small)
    # The small target's calls come in turn with the big one's, not after its 100.
    assert [order.index(f"small{i}") for i in range(3)] == [1, 3, 5]


def test_urgent_calls_of_a_target_go_first() -> None:
    calls = [("t", f"describe{i}", False) for i in range(5)] + [("t", "page2", True)]
    order = run_in_order(CallPool(1), calls)
    assert order[0] == "page2"


def test_threads_do_not_grow_with_targets() -> None:
    wait_for(lambda: not any(t.name.startswith("aws-call") for t in threading.enumerate()),
             what="earlier tests' pools to end")
    before = threading.active_count()
    pool = CallPool(4)
    pool.start()
    finished = threading.Semaphore(0)
    for owner in range(2000):
        pool.submit(owner, finished.release)
    for _ in range(2000):
        assert finished.acquire(timeout=10)
    assert threading.active_count() - before == 4
    pool.stop()


def test_a_crashing_task_does_not_kill_its_worker() -> None:
    pool = CallPool(1)
    pool.start()
    ran = threading.Event()

    def crash() -> None:
        raise RuntimeError("bug")

    pool.submit("a", crash)
    pool.submit("a", ran.set)
    assert ran.wait(10)
    pool.stop()


def test_token_bucket() -> None:
    bucket = TokenBucket(2.0, now=100.0)  # 2 a second, 2 saved up at most
    assert bucket.take(100.0) == 0
    assert bucket.take(100.0) == 0
    assert bucket.take(100.0) == 0.5  # the third waits half a second
    assert bucket.take(100.5) == 0
    assert bucket.take(110.0) == 0 and bucket.take(110.0) == 0
    assert bucket.take(110.0) > 0  # no more than the burst after a long rest


def test_rate_limited_target_waits_while_others_go_on() -> None:
    waits: list[tuple[object, float]] = []
    pool = CallPool(1, rate=1000.0, on_wait=lambda owner, s: waits.append((owner, s)))
    # 1,000 a second with a burst of 1,000: the 1,001st call of "limited" waits for a token,
    # and the free-running target's calls are not held up behind it.
    calls = [("limited", f"l{i}", False) for i in range(1100)]
    order = run_in_order(pool, calls)
    assert len(order) == 1100
    wait_for(lambda: waits, what="a recorded wait")
    assert waits[0][0] == "limited" and waits[0][1] > 0


def test_a_task_that_makes_several_calls_pays_for_each() -> None:
    bucket = TokenBucket(10.0, now=0.0)  # 10 a second, 10 saved up
    assert bucket.take(0.0) == 0
    bucket.debit(14)  # that task made 15 calls: the balance is 10 - 15 = -5
    assert bucket.take(0.0) == 0.6  # 6 tokens short: 0.6 s at 10 a second
    assert bucket.take(0.6) == 0


def test_a_forgotten_owner_queues_nothing() -> None:
    pool = CallPool(1)
    pool.forget("gone")
    pool.submit("gone", lambda: None)
    assert pool.pending() == 0


def test_background_calls_wait_for_every_owners_other_calls() -> None:
    pool = CallPool(1)
    ran: list[str] = []
    for owner in ("a", "b"):
        for i in range(3):
            pool.submit(owner, functools.partial(ran.append, f"{owner}-findings{i}"),
                        background=True)
    for owner in ("c", "d"):
        for i in range(3):
            pool.submit(owner, functools.partial(ran.append, f"{owner}-describe{i}"))
    pool.submit("a", lambda: ran.append("a-list"), urgent=True)
    pool.start()
    wait_for(lambda: len(ran) == 13, what="every call")
    pool.stop()
    assert not any("findings" in name for name in ran[:7])  # the list and the describes
    assert ran[7:] == ["a-findings0", "b-findings0", "a-findings1", "b-findings1",
                       "a-findings2", "b-findings2"]  # in turns among themselves


def test_a_background_call_waits_at_most_its_limit_under_constant_load() -> None:
    now = [0.0]
    pool = CallPool(1, clock=lambda: now[0])
    ran: list[str] = []

    def describe(i: int) -> None:
        ran.append(f"describe{i}")
        now[0] += 1.0  # each call takes a second on the fake clock

    pool.submit("a", lambda: ran.append("findings"), background=True)
    for i in range(100):
        pool.submit("b", functools.partial(describe, i))
    pool.start()
    wait_for(lambda: len(ran) == 101, what="every call")
    pool.stop()
    assert ran.index("findings") == BACKGROUND_MAX_WAIT  # after 30 one-second calls


def test_forgetting_an_owner_drops_its_background_calls_too() -> None:
    pool = CallPool(1)
    pool.submit("gone", lambda: None)
    pool.submit("gone", lambda: None, background=True)
    assert pool.pending() == 2
    pool.forget("gone")
    assert pool.pending() == 0
    pool.submit("gone", lambda: None, background=True)
    assert pool.pending() == 0


def test_background_calls_that_waited_get_every_other_turn_not_all() -> None:
    now = [0.0]
    pool = CallPool(1, clock=lambda: now[0])
    ran: list[str] = []

    def call(name: str) -> None:
        ran.append(name)
        now[0] += 1.0

    for i in range(10):
        pool.submit(f"t{i}", functools.partial(call, f"findings{i}"), background=True)
    for i in range(100):
        pool.submit("b", functools.partial(call, f"describe{i}"))
    pool.start()
    wait_for(lambda: len(ran) == 110, what="every call")
    pool.stop()
    first = ran.index("findings0")
    assert first == BACKGROUND_MAX_WAIT
    # From then on, describes and findings alternate until the findings are done.
    assert [name[:8] for name in ran[first:first + 20]] == ["findings", "describe"] * 10


def clocked_run(backgrounds: list[str], flip_after: int, gate: str) -> list[str]:
    """One worker, a clock that moves 1 s per call: the `backgrounds` calls (each of its own
    target, in the background), then 100 describes of one target; `gate` names the pool's
    `hold_background` or `pause_background`, a flag that turns false once the describe
    numbered `flip_after` ran. The order the calls ran in."""
    now = [0.0]
    flag = [True]
    pool = CallPool(1, clock=lambda: now[0], **{gate: lambda: flag[0]})  # type: ignore[arg-type]
    ran: list[str] = []

    def call(name: str) -> None:
        ran.append(name)
        now[0] += 1.0
        if name == f"describe{flip_after}":
            flag[0] = False

    for i, name in enumerate(backgrounds):
        pool.submit(f"t{i}", functools.partial(call, name), background=True)
    for i in range(100):
        pool.submit("b", functools.partial(call, f"describe{i}"))
    pool.start()
    wait_for(lambda: len(ran) == len(backgrounds) + 100, what="every call")
    pool.stop()
    return ran


def test_until_ready_background_calls_take_only_the_turns_left_over() -> None:
    # Held (not ready) until the 60th describe, the last refresh call.
    ran = clocked_run([f"findings{i}" for i in range(5)], 59, "hold_background")
    # 60 calls, twice the limit, and no background call while not ready; then every other turn.
    assert ran[:60] == [f"describe{i}" for i in range(60)]
    assert [name[:8] for name in ran[60:70]] == ["findings", "describe"] * 5


def test_until_ready_background_calls_still_take_idle_turns() -> None:
    pool = CallPool(1, hold_background=lambda: True)
    done = threading.Event()
    pool.submit("a", done.set, background=True)
    pool.start()
    assert done.wait(10)  # nothing else to do: the held call runs
    pool.stop()


def test_while_paused_no_background_call_starts_even_on_idle_workers() -> None:
    paused = [True]
    asked = [0]

    def pause() -> bool:
        asked[0] += 1
        return paused[0]

    pool = CallPool(2, pause_background=pause)
    ran: list[str] = []
    pool.submit("t0", functools.partial(ran.append, "findings"), background=True)
    for i in range(3):
        pool.submit(f"t{i}", functools.partial(ran.append, f"list{i}"), urgent=True)
    pool.start()
    wait_for(lambda: len(ran) == 3, what="the refresh calls")
    # Both workers idle, each looking again at the pause: the background call still waits.
    seen = asked[0]
    wait_for(lambda: asked[0] >= seen + 4, what="workers looking at the pause again")
    assert ran == ["list0", "list1", "list2"]
    paused[0] = False
    pool.wake()
    wait_for(lambda: len(ran) == 4, timeout=5, what="the background call after the pause")
    pool.stop()
    assert ran[-1] == "findings"


def test_a_pause_holds_background_calls_that_waited_their_limit_too() -> None:
    ran = clocked_run(["findings"], 79, "pause_background")
    # Waited 30 s by the 30th call, but paused until the 80th: then its every-other turn.
    assert ran[:80] == [f"describe{i}" for i in range(80)]
    assert ran[80] == "findings"
