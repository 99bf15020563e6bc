"""Rewrite the golden files from the current code: ``python -m tests.generate.update_golden``.

Only for deliberate changes (a new policy rule changes every policy): review the diff
before committing it, because the tests then hold the code to exactly this output.
"""

from __future__ import annotations

from tests.generate.golden_support import generate_text, golden_cases


def main() -> None:
    for case in golden_cases():
        result = generate_text("input.yaml", (case / "input.yaml").read_text())
        (case / "expected.yaml").write_text(result.text)
        (case / "warnings.txt").write_text("".join(w + "\n" for w in result.warnings))
        print(f"{case.name}: changed={result.changed} warnings={len(result.warnings)}")


if __name__ == "__main__":
    main()
