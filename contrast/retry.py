"""The one place retry and wait policies are defined (tenacity underneath)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from tenacity import (
    RetryError,
    Retrying,
    retry_if_exception,
    retry_if_exception_type,
    stop_after_attempt,
    stop_after_delay,
    wait_exponential,
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
