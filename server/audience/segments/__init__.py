"""Segments: CEL expressions, their limits, SQL push-down, evaluation and the sandbox."""
