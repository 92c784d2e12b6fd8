"""The PostgreSQL backend: the same store as sqlite/, for many workers on many machines.

Needs the `postgres` extra (psycopg 3). connection.py parses and masks the URL and opens
connections (with backoff after a loss), migrations.py builds the schema under an advisory lock,
rows.py converts between records and SQL values, store.py is `PostgresStore`.
"""

URL_SCHEMES = ("postgresql://", "postgres://")


def is_postgres_url(value: str | None) -> bool:
    """True when a --db / HOOKCTL_DB value names a PostgreSQL database, not a SQLite file."""
    return bool(value) and str(value).startswith(URL_SCHEMES)
