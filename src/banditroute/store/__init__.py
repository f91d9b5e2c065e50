"""Event logs: the contract, an in-memory log and the DuckDB log."""
