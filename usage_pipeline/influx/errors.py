"""The ledger store's errors, one per way InfluxDB can fail a caller; messages never hold a token or password."""

from __future__ import annotations


class InfluxError(RuntimeError):
    """Base of the store's errors; messages never contain the token or password."""


class InfluxWriteError(InfluxError):
    """A write the server rejected or never answered: the batch must be retried by the caller."""

    def __init__(self, message: str, *, status: int | None, database: str, batch_size: int, server_text: str) -> None:
        super().__init__(message)
        self.status = status
        self.database = database
        self.batch_size = batch_size
        self.server_text = server_text


class InfluxQueryError(InfluxError):
    """An InfluxQL statement failed; the message carries the server's error text."""


class InfluxSetupError(InfluxError):
    """The database/bucket is missing or not reachable through the 1.x API; the message says how to fix it."""
