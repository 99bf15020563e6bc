"""The Coordinator: secret seed, manifest history, recovery, mesh CA and the attested API."""
