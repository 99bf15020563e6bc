"""SIGTERM and SIGINT without asynchronous exceptions.

Both signals are blocked from the start, so they stay pending instead of interrupting the
Initializer at an arbitrary point (say, between mounting and registering the unmount, or in
the middle of writing a log line). The flow checks for them between steps, and once the
volume is ready it waits for them with sigwait(2). Teardown then runs to the end: a second
SIGTERM cannot cut it short.

When the Initializer is PID 1 of its container, the kernel drops signals from outside the
namespace whose disposition is the default, unless they are blocked; blocking them is what
makes them reach us at all.
"""

from __future__ import annotations

import signal

SIGNALS = {signal.SIGTERM, signal.SIGINT}


class Terminated(BaseException):
    """A termination signal arrived: unwind every context manager, then exit 0.

    A BaseException, so that no ``except Exception`` on the way can swallow it.
    """

    def __init__(self, signum: int):
        self.signal_name = signal.Signals(signum).name
        super().__init__(self.signal_name)


def block() -> None:
    signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)


def check() -> None:
    """Raise Terminated if a termination signal is pending; consume it."""
    pending = signal.sigpending() & SIGNALS
    if pending:
        raise Terminated(signal.sigwait(pending))


def wait() -> None:
    """Block until a termination signal arrives, then raise Terminated."""
    raise Terminated(signal.sigwait(SIGNALS))


def sleep(seconds: float) -> None:
    """Wait ``seconds``, or raise Terminated as soon as a termination signal arrives."""
    if seconds <= 0:
        check()
        return
    received = signal.sigtimedwait(SIGNALS, seconds)
    if received is not None:
        raise Terminated(received.si_signo)
