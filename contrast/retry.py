"""The one place retry and wait policies are defined (tenacity underneath)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from tenacity import Retrying, retry_if_exception_type, stop_after_delay, wait_fixed

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
