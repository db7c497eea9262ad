"""Benchmarks: standalone scripts run with `python -m bench.<name>`."""
