"""One small exception hierarchy and the exit codes the CLI turns it into."""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """Process exit codes, documented in the README."""

    OK = 0
    FAILED = 1  # an event could not be read, or a delivery failed for good
    USAGE = 2  # bad command line
    INVALID_RULES = 3  # rules did not load; nothing was sent
    DATABASE = 4  # the delivery database cannot be used (damaged, read-only, busy, not ours)
    # `plan` only, as terraform's -detailed-exitcode: the new rules would send something
    # differently. An alias of USAGE's value; plan's own errors exit 1 (see README).
    DIFFERENCES = 2


class HookctlError(Exception):
    """An error a user can act on; the CLI prints it as `Error: ...`."""

    exit_code: ExitCode = ExitCode.FAILED


class UsageError(HookctlError):
    """The command line asks for something that cannot be done."""

    exit_code = ExitCode.USAGE


class RuleError(HookctlError):
    """One problem in one rule file, located by file, rule name and field."""

    exit_code = ExitCode.INVALID_RULES

    def __init__(
        self, message: str, *, file: str = "", rule: str | None = None, field: str | None = None
    ) -> None:
        self.message = message
        self.file = file
        self.rule = rule
        self.field = field
        super().__init__(str(self))

    def __str__(self) -> str:
        parts = [self.file or "<rules>"]
        if self.rule:
            parts.append(f"rule {self.rule!r}")
        if self.field:
            parts.append(self.field)
        return ": ".join([*parts, self.message])


class RuleErrors(HookctlError):
    """Every problem found while loading rules, reported together."""

    exit_code = ExitCode.INVALID_RULES

    def __init__(self, errors: list[RuleError]) -> None:
        self.errors = errors
        super().__init__("\n".join(str(e) for e in errors))


class RenderError(HookctlError):
    """A matched rule could not be turned into a request for this event (never retried)."""


class StoreError(HookctlError):
    """The delivery store's errors (hookctl/store/errors.py has the family; the CLI maps
    each kind to an exit code)."""
