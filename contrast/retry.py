"""The one place retry and wait policies are defined (tenacity underneath)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from tenacity import (
    RetryCallState,
    RetryError,
    Retrying,
    retry_if_exception,
    retry_if_exception_type,
    stop_after_attempt,
    stop_after_delay,
    stop_never,
    wait_exponential,
    wait_exponential_jitter,
    wait_fixed,
)

T = TypeVar("T")


class NotYet(Exception):
    """Raised by a polled function to say: the condition does not hold yet, try again."""


def poll_until(attempt: Callable[[], T], *, timeout: float, interval: float = 0.1) -> T:
    """Call ``attempt`` until it returns instead of raising NotYet, for at most ``timeout`` s.

    Any other exception stops the wait at once. When time runs out, the last NotYet
    propagates, so the caller can turn its message into a timeout error.
    """
    for try_ in Retrying(
        stop=stop_after_delay(timeout),
        wait=wait_fixed(interval),
        retry=retry_if_exception_type(NotYet),
        reraise=True,
    ):
        with try_:
            return attempt()
    raise AssertionError("tenacity.Retrying ended without a result")  # pragma: no cover


class GaveUp(Exception):
    """``retry_briefly`` ran out of attempts; ``last`` is the final error."""

    def __init__(self, last: BaseException, attempts: int, seconds: float) -> None:
        self.last = last
        self.attempts = attempts
        self.seconds = seconds
        super().__init__(f"gave up after {attempts} attempts over {seconds:.1f} s: {last}")


def retry_briefly(
    attempt: Callable[[], T],
    *,
    retryable: Callable[[BaseException], bool],
    attempts: int = 5,
) -> T:
    """Call ``attempt`` up to ``attempts`` times with exponential backoff (0.2 s doubling,
    at most 2 s) while it raises an error ``retryable`` accepts; for a CLI that should say
    "unreachable" within seconds, not hang. Other errors propagate at once."""
    start = time.monotonic()
    try:
        for try_ in Retrying(
            stop=stop_after_attempt(attempts),
            wait=wait_exponential(multiplier=0.2, max=2.0),
            retry=retry_if_exception(retryable),
            reraise=False,
        ):
            with try_:
                return attempt()
    except RetryError as exc:
        last = exc.last_attempt.exception()
        assert last is not None
        raise GaveUp(last, attempts, time.monotonic() - start) from None
    raise AssertionError("tenacity.Retrying ended without a result")  # pragma: no cover


# Retrying until stopped: the first wait is about FIRST_DELAY s, doubling up to MAX_DELAY s,
# each plus up to JITTER s at random so that many pods restarted together (a node reboot, a
# Coordinator restart) do not reach the Coordinator in lockstep.
UNTIL_STOPPED_FIRST_DELAY = 0.5
UNTIL_STOPPED_MAX_DELAY = 5.0
UNTIL_STOPPED_JITTER = 0.5


def retry_until_stopped(
    attempt: Callable[[], T],
    *,
    retryable: Callable[[BaseException], bool],
    on_failure: Callable[[int, BaseException, float], None],
    sleep: Callable[[float], None],
    first_delay: float = UNTIL_STOPPED_FIRST_DELAY,
    max_delay: float = UNTIL_STOPPED_MAX_DELAY,
    jitter: float = UNTIL_STOPPED_JITTER,
) -> T:
    """Call ``attempt`` until it returns, for as long as it takes.

    Between attempts, exponential backoff with jitter and a cap. After each failed attempt
    ``on_failure(attempt number, error, seconds until the next one)`` is called, to log why.
    ``sleep`` waits between attempts; make it interruptible (it may raise to stop the loop,
    e.g. on SIGTERM). An error ``retryable`` refuses propagates at once, as does anything
    ``attempt`` or ``sleep`` raises that is not an ``Exception`` (a termination request).
    """

    def log_failure(state: RetryCallState) -> None:
        outcome = state.outcome
        assert outcome is not None
        error = outcome.exception()
        assert error is not None
        delay = state.next_action.sleep if state.next_action else 0.0
        on_failure(state.attempt_number, error, delay)

    for try_ in Retrying(
        stop=stop_never,
        wait=wait_exponential_jitter(multiplier=first_delay, max=max_delay, jitter=jitter),
        retry=retry_if_exception(lambda error: isinstance(error, Exception) and retryable(error)),
        before_sleep=log_failure,
        sleep=sleep,
        reraise=True,
    ):
        with try_:
            return attempt()
    raise AssertionError("tenacity.Retrying ended without a result")  # pragma: no cover
