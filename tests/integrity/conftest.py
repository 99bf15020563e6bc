"""The real header fixtures of the initializer tests (made by the real cryptsetup)."""

from tests.initializer.conftest import luks_image, passphrase, pristine_header

__all__ = ["luks_image", "passphrase", "pristine_header"]
