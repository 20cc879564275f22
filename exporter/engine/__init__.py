"""The engine: the call pool, each target's collectors on it, the snapshot store, the fleet of
targets (static, discovered, sharded) and the self-metrics."""
