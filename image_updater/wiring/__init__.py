"""Wiring: settings in, adapters out. The only place that knows both the configuration and
the concrete registry, git and forge adapters; the engine sees their interfaces only."""
