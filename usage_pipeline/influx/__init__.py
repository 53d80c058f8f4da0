"""The InfluxDB ledger: the `generations` point schema, ranks, the capture's upserts, the 1.x-API store for
plain callers, and a private influxd for tests and the demo."""
