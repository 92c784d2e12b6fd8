"""The configuration file: settings every command reads alike (`fire`, `retry-loop`, `replay`).

A setting that decides whether a delivery can be sent, such as the network allow-list, must
not depend on which command happens to send it: `fire --allow-net` queues a retry that a
`retry-loop` from cron must be allowed to send too. So it lives in one file, TOML, at
`$HOOKCTL_CONFIG`, else `config.toml` in the configuration directory (`$HOOKCTL_HOME`, else
`$XDG_CONFIG_HOME/hookctl`, i.e. `~/.config/hookctl/config.toml`). Flags and environment
variables add to it for one run. The file is strict: an unknown key is an error naming the
file and the key, so a misspelt setting is never silently ignored.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hookctl.errors import UsageError

FILE_NAME = "config.toml"
KEYS = ("allow_net",)


class ConfigError(UsageError):
    """The configuration file cannot be used; one line naming the file and the key (exit 2)."""


@dataclass(frozen=True)
class Config:
    """What the configuration file says; `path` is the file read (None: there is none)."""

    path: Path | None = None
    allow_net: tuple[str, ...] = ()


def config_path() -> Path:
    """Where the configuration file is: `$HOOKCTL_CONFIG`, else config.toml in the config dir."""
    from hookctl import paths

    chosen = os.environ.get("HOOKCTL_CONFIG")
    if chosen:
        return Path(chosen).expanduser()
    return paths.config_dir() / FILE_NAME


def load_config(path: Path | None = None) -> Config:
    """Read the configuration file; none at the default place is an empty configuration.

    A file named by `$HOOKCTL_CONFIG` that does not exist is an error: the user said to use it.
    """
    path = path or config_path()
    if not path.exists():
        if os.environ.get("HOOKCTL_CONFIG"):
            raise ConfigError(f"{path}: no such configuration file (named by $HOOKCTL_CONFIG)")
        return Config()
    if not path.is_file():
        raise ConfigError(f"{path}: not a file (the configuration file is TOML)")
    import tomllib  # only when there is a file: cron runs retry-loop often

    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise ConfigError(f"{path}: cannot read: {reason}") from None
    return Config(path=path, allow_net=_allow_net(path, data))


def _allow_net(path: Path, data: Mapping[str, Any]) -> tuple[str, ...]:
    for key in data:
        if key not in KEYS:
            known = ", ".join(KEYS)
            raise ConfigError(f"{path}: unknown key {key!r} (known keys: {known})")
    value = data.get("allow_net", [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(
            f"{path}: allow_net: expected a list of strings, e.g. "
            'allow_net = ["10.1.2.0/24", "crm.intranet"]'
        )
    from hookctl.transport.netguard import AllowList

    try:
        AllowList.parse(value)
    except ValueError as exc:
        raise ConfigError(f"{path}: allow_net: {exc}") from None
    return tuple(value)
