"""``contrast.retry.retry_until_stopped``: the Initializer's retry policy."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from contrast.retry import retry_until_stopped


class Stop(BaseException):
    """What an interruptible sleep raises on SIGTERM."""


def failing(times: int, error: Exception) -> tuple[list[int], Callable[[], str]]:
    calls: list[int] = []

    def attempt() -> str:
        calls.append(1)
        if len(calls) <= times:
            raise error
        return "done"

    return calls, attempt


def test_returns_the_first_success_after_retryable_failures() -> None:
    calls, attempt = failing(3, ConnectionError("down"))
    slept: list[float] = []
    result = retry_until_stopped(
        attempt,
        retryable=lambda error: True,
        on_failure=lambda *_: None,
        sleep=slept.append,
    )
    assert result == "done"
    assert len(calls) == 4
    assert len(slept) == 3


def test_reports_each_failed_attempt_with_its_number_error_and_next_delay() -> None:
    error = ConnectionError("down")
    _, attempt = failing(2, error)
    reports: list[tuple[int, BaseException, float]] = []
    retry_until_stopped(
        attempt,
        retryable=lambda error: True,
        on_failure=lambda n, e, d: reports.append((n, e, d)),
        sleep=lambda _: None,
    )
    assert [(n, e) for n, e, _ in reports] == [(1, error), (2, error)]
    assert all(delay > 0 for _, _, delay in reports)


def test_delays_grow_exponentially_with_jitter_up_to_the_cap() -> None:
    _, attempt = failing(12, ConnectionError("down"))
    slept: list[float] = []
    retry_until_stopped(
        attempt,
        retryable=lambda error: True,
        on_failure=lambda *_: None,
        sleep=slept.append,
        first_delay=0.5,
        max_delay=5.0,
        jitter=0.5,
    )
    for number, delay in enumerate(slept):
        base = 0.5 * 2**number
        assert min(base, 5.0) <= delay <= min(base + 0.5, 5.0)
    assert slept[-1] == 5.0


def test_jitter_makes_delays_differ_between_runs() -> None:
    runs = []
    for _ in range(5):
        _, attempt = failing(1, ConnectionError("down"))
        slept: list[float] = []
        retry_until_stopped(
            attempt,
            retryable=lambda error: True,
            on_failure=lambda *_: None,
            sleep=slept.append,
        )
        runs.append(slept[0])
    assert len(set(runs)) > 1


def test_an_error_that_is_not_retryable_propagates_at_once() -> None:
    calls, attempt = failing(5, ValueError("bad configuration"))
    with pytest.raises(ValueError, match="bad configuration"):
        retry_until_stopped(
            attempt,
            retryable=lambda error: not isinstance(error, ValueError),
            on_failure=lambda *_: None,
            sleep=lambda _: None,
        )
    assert len(calls) == 1


def test_a_sleep_that_raises_stops_the_retries() -> None:
    calls, attempt = failing(100, ConnectionError("down"))

    def interrupted(_: float) -> None:
        raise Stop

    with pytest.raises(Stop):
        retry_until_stopped(
            attempt,
            retryable=lambda error: True,
            on_failure=lambda *_: None,
            sleep=interrupted,
        )
    assert len(calls) == 1


def test_a_termination_raised_by_the_attempt_is_never_retried() -> None:
    calls: list[int] = []

    def attempt() -> str:
        calls.append(1)
        raise Stop

    with pytest.raises(Stop):
        retry_until_stopped(
            attempt, retryable=lambda error: True, on_failure=lambda *_: None, sleep=lambda _: None
        )
    assert len(calls) == 1
