"""The workload side of the Coordinator's mesh API (used by the Initializer)."""
