"""The store's own errors: what went wrong with the database, or with what was asked of it.

Every backend raises these (never its driver's exceptions, never the CLI's errors), each as one
line a user can act on: what, which database, what to do. The CLI maps each kind to an exit
code in one place (hookctl/cli/app.py).
"""

from __future__ import annotations

from hookctl.errors import StoreError

__all__ = [
    "AmbiguousId",
    "BackendUnavailable",
    "BadSelection",
    "DatabaseBusy",
    "DatabaseDamaged",
    "DatabaseMissing",
    "DatabaseUnusable",
    "ForeignDatabase",
    "NewerDatabase",
    "NotWritable",
    "StoreError",
    "UnknownDelivery",
]


# --- the database cannot be used ------------------------------------------------------------


class DatabaseUnusable(StoreError):
    """The database cannot be opened, read or written; nothing the command asked was done."""


class DatabaseDamaged(DatabaseUnusable):
    """The file is corrupt or not a database at all: recover it or restore a backup."""


class ForeignDatabase(DatabaseUnusable):
    """A database some other program made: hookctl leaves it alone."""


class NewerDatabase(DatabaseUnusable):
    """Written by a newer hookctl (a migration this version does not know)."""


class NotWritable(DatabaseUnusable):
    """The database, its directory or its WAL files cannot be written."""


class DatabaseBusy(DatabaseUnusable):
    """Another process held the database longer than the store waits."""


# --- what was asked cannot be done ------------------------------------------------------------


class DatabaseMissing(StoreError):
    """A reading command named a database that does not exist yet."""


class BackendUnavailable(StoreError):
    """The database URL names a backend this hookctl does not have (or a scheme it does not know)."""


class UnknownDelivery(StoreError):
    """No delivery has that id (or id prefix)."""


class AmbiguousId(StoreError):
    """An id prefix matches more than one delivery."""


class BadSelection(StoreError):
    """A selection of deliveries that cannot be made (ids and filters together, or neither)."""
