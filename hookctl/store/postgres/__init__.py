"""The PostgreSQL backend: the same store as sqlite/, for many workers on many machines.

Needs the `postgres` extra (psycopg 3). connection.py parses and masks the URL and opens
connections (with backoff after a loss), migrations.py builds the schema under an advisory lock,
rows.py converts between records and SQL values, queue.py holds the queue's operations, history.py,
events.py and endpoints.py the reads and writes of the log, stored events and endpoint state;
store.py is `PostgresStore`, which runs them in its transactions.
Opened by hookctl.store.open_store("postgresql://..."), never imported otherwise.
"""
