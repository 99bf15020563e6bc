"""How ``contrast`` commands log and report failures: one line naming what failed, exit 1."""

from __future__ import annotations

import functools
import ssl
import sys
from collections.abc import Callable
from typing import ParamSpec, TypeVar

import click

from contrast.attestation.base import AttestationError
from contrast.client import CoordinatorUnreachable
from contrast.log import setup_logging
from contrast.manifest import ManifestError
from contrast.protocol import ProtocolError, RemoteError
from contrast.seedshare import SeedShareError
from contrast.workspace import WorkspaceError

_P = ParamSpec("_P")
_R = TypeVar("_R")

EXIT_FAILURE = 1

# Failures caused by input or by the peer: report them, without a traceback.
USER_ERRORS = (
    AttestationError,
    CoordinatorUnreachable,
    ManifestError,
    ProtocolError,
    RemoteError,
    SeedShareError,
    WorkspaceError,
)


def reports_errors(command_name: str) -> Callable[[Callable[_P, _R]], Callable[_P, _R]]:
    def decorate(function: Callable[_P, _R]) -> Callable[_P, _R]:
        @functools.wraps(function)
        def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
            setup_logging("contrast")
            try:
                return function(*args, **kwargs)
            except USER_ERRORS as exc:
                click.echo(f"contrast {command_name}: error: {exc}", err=True)
                sys.exit(EXIT_FAILURE)
            except ssl.SSLError as exc:
                click.echo(
                    f"contrast {command_name}: error: TLS with the Coordinator failed "
                    f"({exc.reason or exc}): is the address a Coordinator?",
                    err=True,
                )
                sys.exit(EXIT_FAILURE)
            except ConnectionError as exc:
                click.echo(
                    f"contrast {command_name}: error: the connection to the Coordinator broke: "
                    f"{exc}",
                    err=True,
                )
                sys.exit(EXIT_FAILURE)
            except OSError as exc:
                click.echo(f"contrast {command_name}: error: {exc}", err=True)
                sys.exit(EXIT_FAILURE)

        return wrapper

    return decorate
