"""The other rule set of `plan --against REV`: the rule files as they were at a git revision."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from pathlib import Path


class RevisionError(Exception):
    """`--against` names neither rules on disk nor a git revision that holds them."""


def rules_at_revision(revision: str, paths: Sequence[Path], into: Path) -> list[Path]:
    """Write the rule files `paths` had at git `revision` under `into`; their new paths.

    Read with `git ls-tree` and `git show REV:FILE` one file at a time (no archive to unpack),
    each path relative to the repository that holds it. A path the revision lacks is left out.
    """
    if revision.startswith("-") or not revision.strip():
        raise RevisionError(f"{revision!r} is not a revision")  # never an option to git

    def git(cwd: Path, *args: str) -> str:
        try:
            done = subprocess.run(
                ["git", *args], cwd=cwd, capture_output=True, text=True, check=False, timeout=60
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise RevisionError(f"cannot run git: {exc}") from None
        if done.returncode != 0:
            said = (done.stderr.strip().splitlines() or ["failed"])[-1]
            raise RevisionError(f"git {args[0]}: {said}")
        return done.stdout

    found: list[Path] = []
    for path in paths:
        where = path.resolve()
        cwd = where if where.is_dir() else where.parent
        top = Path(git(cwd, "rev-parse", "--show-toplevel").strip())
        git(top, "rev-parse", "--verify", "--quiet", f"{revision}^{{commit}}")
        relative = where.relative_to(top)
        names = git(top, "ls-tree", "-r", "--name-only", revision, "--", str(relative)).split("\n")
        target = into / relative
        for name in filter(None, names):
            inside = Path(name).relative_to(relative) if where.is_dir() else Path()
            if where.is_dir() and (
                len(inside.parts) != 1 or inside.suffix not in (".yaml", ".yml")
            ):
                continue  # rule directories are read one level deep, as load_rules does
            text = git(top, "show", f"{revision}:{name}")
            out = target / inside if where.is_dir() else target
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(text, encoding="utf-8")
        if target.exists():
            found.append(target)
    return found
