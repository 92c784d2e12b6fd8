"""The SQLite backend: one file, WAL, append-only migrations, the queue's SQL."""
