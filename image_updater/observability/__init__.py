"""Metrics and logs: what operators see."""
