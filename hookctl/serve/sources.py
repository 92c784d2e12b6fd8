"""`serve --sources FILE`: read the per-source intake settings into plain dataclasses.

The file names, per source, the environment variables that hold its secrets, with the keys
of `serve`'s options in snake case (`token_env`, `zendesk_secret_env`, ...), and says what
`/events` and unlisted sources get (`unlisted: global`, the default, or `refuse`). It is read
as rule files are (hookctl/rules/yamlfile.py: lines kept, duplicate keys refused), and every
problem is a RuleError `FILE:LINE: field: message`, so a bad file exits 3 as bad rules do.
No secret is read here: auth.py turns the names into checks.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hookctl.errors import RuleError, RuleErrors, UsageError
from hookctl.rules.webhook import SpecChecker
from hookctl.rules.yamlfile import LineMapping, read_yaml
from hookctl.serve.auth import DEFAULT_HEADER, OPTIONS, SecretNames

# What /events/SOURCE accepts as a source name (and a listed source must be).
SOURCE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
ENV_VAR = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
HEADER = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,64}$")  # an HTTP field name (a token)
TOP_KEYS = ("sources", "unlisted")
UNLISTED = ("global", "refuse")
# The keys of one source: serve's intake options without the dashes, in snake case.
CHECK_KEYS = tuple(key for kind, (_, key) in OPTIONS.items() if kind != "admin")
SOURCE_KEYS = (*CHECK_KEYS, "header_name")


@dataclass(frozen=True)
class Source:
    """One listed source: its name, where it is in the file, and its variables' names."""

    name: str
    where: str  # FILE:LINE of its key, for errors about it at start-up
    names: SecretNames


@dataclass(frozen=True)
class SourcesFile:
    """The whole file: the listed sources and what unlisted ones (and `/events`) get."""

    path: Path
    sources: tuple[Source, ...]
    refuse_unlisted: bool = False


def load_sources(path: Path) -> SourcesFile:
    """The sources file at `path`; RuleErrors (every problem, `FILE:LINE: field: ...`) if bad."""
    if not path.exists():
        raise UsageError(f"--sources {path}: no such file")
    doc = read_yaml(path)
    checker = SpecChecker({}, path, None)
    if doc is None:
        raise RuleErrors([RuleError("the file is empty (expected `sources:`)", file=str(path))])
    if not isinstance(doc, LineMapping):
        raise RuleErrors(
            [
                RuleError(
                    f"expected a mapping with `sources:` (got {type(doc).__name__})",
                    file=str(path),
                )
            ]
        )
    checker.unknown_keys(doc, TOP_KEYS, "")
    refuse = False
    unlisted = doc.get("unlisted", "global")
    if unlisted not in UNLISTED:
        checker.error("unlisted", "expected global or refuse", doc, "unlisted")
    else:
        refuse = unlisted == "refuse"
    raw = doc.get("sources")
    sources: list[Source] = []
    if raw is None and checker.errors:
        pass  # `sourcse:` was named an unknown key (did you mean...): once is enough
    elif not isinstance(raw, LineMapping) or not raw:
        checker.error(
            "sources",
            "expected a mapping of source names to their checks (e.g. `zendesk: "
            "{zendesk_secret_env: ZENDESK_WEBHOOK_SECRET}`)",
            doc,
            "sources" if "sources" in doc else None,
        )
    else:
        for name, spec in raw.items():
            source = _source(checker, path, raw, name, spec)
            if source is not None:
                sources.append(source)
    if checker.errors:
        raise RuleErrors(sorted(checker.errors, key=_line))
    return SourcesFile(path=path, sources=tuple(sources), refuse_unlisted=refuse)


def _source(
    checker: SpecChecker, path: Path, parent: LineMapping, name: Any, spec: Any
) -> Source | None:
    """One source's entry, or None (its errors recorded) when it is not valid."""
    key = str(name)
    field = f"sources.{key}"
    if not isinstance(name, str) or not SOURCE.match(name):
        checker.error(
            field,
            "a source name is letters, digits and . _ - (starting with a letter or digit, "
            "64 at most), as in /events/SOURCE",
            parent,
            key,
        )
        return None
    if not isinstance(spec, LineMapping):
        checker.error(
            field,
            f"expected a mapping of checks (one or more of {', '.join(CHECK_KEYS)})",
            parent,
            key,
        )
        return None
    before = len(checker.errors)
    checker.unknown_keys(spec, SOURCE_KEYS, field + ".")

    def var(option: str) -> str | None:
        value = spec.get(option)
        if value is None:
            return None
        if not isinstance(value, str) or not ENV_VAR.match(value):
            checker.error(
                f"{field}.{option}",
                "expected the NAME of an environment variable that holds the secret, not "
                "the secret itself",
                spec,
                option,
            )
            return None
        return value

    standard: list[str] = []
    raw_sw = spec.get("standard_webhooks_env")
    if raw_sw is not None:
        items = raw_sw if isinstance(raw_sw, list) else [raw_sw]
        if not items or not all(isinstance(n, str) and ENV_VAR.match(n) for n in items):
            checker.error(
                f"{field}.standard_webhooks_env",
                "expected a variable name or a list of them (for a rotation)",
                spec,
                "standard_webhooks_env",
            )
        else:
            standard = list(items)
    header_name = spec.get("header_name", DEFAULT_HEADER)
    if not isinstance(header_name, str) or not HEADER.match(header_name):
        checker.error(f"{field}.header_name", "expected an HTTP header name", spec, "header_name")
        header_name = DEFAULT_HEADER
    elif "header_name" in spec and "header_secret_env" not in spec:
        checker.error(
            f"{field}.header_name", "header_name needs header_secret_env", spec, "header_name"
        )
    names = SecretNames(
        token=var("token_env"),
        basic=var("basic_env"),
        header=var("header_secret_env"),
        header_name=header_name,
        query_token=var("url_token_env"),
        zendesk=var("zendesk_secret_env"),
        standard_webhooks=tuple(standard),
    )
    if len(checker.errors) == before and not any(option in spec for option in CHECK_KEYS):
        checker.error(
            field, f"a source needs at least one check: {', '.join(CHECK_KEYS)}", parent, key
        )
    if len(checker.errors) > before:
        return None
    line = parent.lines.get(key, 0)
    return Source(name=name, where=f"{path}:{line}", names=names)


def _line(error: RuleError) -> int:
    """The line an error is at (its `FILE:LINE`), for listing them in the file's order."""
    _, _, line = error.file.rpartition(":")
    return int(line) if line.isdigit() else 0
