"""Rewrite the expected error messages: ``python -m tests.generate.update_errors``.

Only for deliberate changes to a message: review the diff before committing it.
"""

from __future__ import annotations

from genpolicy.errors import InputErrors
from tests.generate.golden_support import error_cases, generate_text


def main() -> None:
    for case in error_cases():
        try:
            generate_text(case.name, case.read_text())
        except InputErrors as exc:
            case.with_suffix(".error").write_text(f"{exc}\n")
            print(exc)
        else:
            raise SystemExit(f"{case.name}: no error")


if __name__ == "__main__":
    main()
