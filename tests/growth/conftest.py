"""Loop devices for the growth tests, as for the Initializer's."""

from tests.initializer.conftest import loop_device

__all__ = ["loop_device"]
