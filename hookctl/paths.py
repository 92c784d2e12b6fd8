"""Where rules and the database live: a flag, then an environment variable, then the user's dirs.

The database is data, so by default it lives in the XDG data directory
(`$XDG_DATA_HOME/hookctl`, i.e. `~/.local/share/hookctl`); rules are configuration, so the
default rules directory is `$XDG_CONFIG_HOME/hookctl/rules` (`~/.config/hookctl/rules`).
`HOOKCTL_HOME` puts both in one directory. A database at the place older versions used
(`~/.config/hookctl/hookctl.db`) is still found and used, with a note.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

APP_NAME = "hookctl"
DB_NAME = "hookctl.db"


def _xdg(variable: str, fallback: str) -> Path:
    value = os.environ.get(variable)
    # The XDG spec: a relative path in these variables is invalid and to be ignored.
    if value and Path(value).is_absolute():
        return Path(value)
    return Path.home() / fallback


def data_dir() -> Path:
    """hookctl's data (the database): `HOOKCTL_HOME`, else `$XDG_DATA_HOME/hookctl`."""
    home = os.environ.get("HOOKCTL_HOME")
    if home:
        return Path(home).expanduser()
    if sys.platform == "win32":
        return Path(os.environ.get("LOCALAPPDATA") or Path.home()) / APP_NAME
    return _xdg("XDG_DATA_HOME", ".local/share") / APP_NAME


def config_dir() -> Path:
    """hookctl's configuration (rules): `HOOKCTL_HOME`, else `$XDG_CONFIG_HOME/hookctl`."""
    home = os.environ.get("HOOKCTL_HOME")
    if home:
        return Path(home).expanduser()
    if sys.platform == "win32":
        return Path(os.environ.get("APPDATA") or Path.home()) / APP_NAME
    return _xdg("XDG_CONFIG_HOME", ".config") / APP_NAME


def legacy_db() -> Path:
    """Where versions before 0.2 put the database: the app directory Typer (click) picks."""
    if sys.platform == "win32":
        return Path(os.environ.get("APPDATA") or Path.home()) / APP_NAME / DB_NAME
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Application Support" / APP_NAME / DB_NAME
    return _xdg("XDG_CONFIG_HOME", ".config") / APP_NAME / DB_NAME


def db_location(flag: str | None = None) -> tuple[Path, str | None]:
    """The SQLite file (`--db`, then `HOOKCTL_DB`, then the data dir), and a note to show
    when it is a database found at the old default place."""
    chosen = flag or os.environ.get("HOOKCTL_DB")
    if chosen:
        return Path(chosen).expanduser(), None
    path = data_dir() / DB_NAME
    if os.environ.get("HOOKCTL_HOME") or path.exists():
        return path, None
    old = legacy_db()
    if old.exists():
        note = (
            f"note: using the database at {old}, where older hookctl versions kept it; "
            f"the default is now {path}: move it there (with any -wal and -shm files) "
            "or point HOOKCTL_DB at it"
        )
        return old, note
    return path, None


def db_path(flag: str | None = None) -> Path:
    """The SQLite file: `--db`, then `HOOKCTL_DB`, then `hookctl.db` in the data dir."""
    return db_location(flag)[0]


def default_rules_dir() -> Path:
    """The rules directory used when neither `--rules` nor `HOOKCTL_RULES` names one."""
    return config_dir() / "rules"


def rule_paths(flags: list[str] | None = None) -> list[Path]:
    """Rule files or directories: `--rules` (repeatable), then `HOOKCTL_RULES` (os.pathsep
    list), then the default rules directory when it exists."""
    if flags:
        return [Path(p).expanduser() for p in flags]
    env = os.environ.get("HOOKCTL_RULES", "")
    found = [Path(p).expanduser() for p in env.split(os.pathsep) if p]
    if found:
        return found
    default = default_rules_dir()
    return [default] if default.is_dir() else []
