"""The errors ``contrast generate`` reports for bad input: where, which resource, what to do."""

from __future__ import annotations


class ResourceError(Exception):
    """A problem with one resource, found by a pure check; the caller adds file and line.

    ``field_path`` names the key whose line is most useful to report (for example the
    annotation at fault), as a path from the resource root.
    """

    def __init__(self, problem: str, field_path: tuple[str | int, ...] = ()) -> None:
        self.problem = problem
        self.field_path = field_path
        super().__init__(problem)


class GenerateError(Exception):
    """Bad input, located: ``FILE:LINE: Kind namespace/name: problem``."""

    def __init__(self, source: str, line: int | None, resource: str | None, problem: str):
        self.source = source
        self.line = line
        self.resource = resource
        self.problem = problem
        location = source if line is None else f"{source}:{line}"
        subject = f"{resource}: " if resource else ""
        super().__init__(f"{location}: {subject}{problem}")


class InputErrors(Exception):
    """Every problem found in one input stream, each located; ``str`` gives one a line."""

    def __init__(self, errors: list[GenerateError]) -> None:
        self.errors = errors
        super().__init__("\n".join(str(e) for e in errors))
