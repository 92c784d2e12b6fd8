"""Where rules and the database live: a flag, then an environment variable, then the app dir."""

from __future__ import annotations

import os
from pathlib import Path

APP_NAME = "hookctl"


def app_dir() -> Path:
    """The per-user directory for hookctl's state (`HOOKCTL_HOME` overrides it)."""
    home = os.environ.get("HOOKCTL_HOME")
    if home:
        return Path(home)
    from typer import get_app_dir  # only needed when no path was given

    return Path(get_app_dir(APP_NAME))


def db_path(flag: str | None = None) -> Path:
    """The SQLite file: `--db`, then `HOOKCTL_DB`, then `hookctl.db` in the app dir."""
    chosen = flag or os.environ.get("HOOKCTL_DB")
    return Path(chosen).expanduser() if chosen else app_dir() / "hookctl.db"


def rule_paths(flags: list[str] | None = None) -> list[Path]:
    """Rule files or directories: `--rules` (repeatable), then `HOOKCTL_RULES` (os.pathsep list)."""
    if flags:
        return [Path(p).expanduser() for p in flags]
    env = os.environ.get("HOOKCTL_RULES", "")
    return [Path(p).expanduser() for p in env.split(os.pathsep) if p]
