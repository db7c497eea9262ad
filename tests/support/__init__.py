"""Helpers shared by the tests: plain functions and classes, no fixtures (those are in
`tests.fixtures`)."""
