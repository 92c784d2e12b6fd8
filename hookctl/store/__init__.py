"""The store: delivery records and ids, and the SQLite backend behind them."""
