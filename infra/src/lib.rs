//! Composition root: Postgres event store, shard map, configuration, CLI.
