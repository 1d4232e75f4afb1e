"""Metrics, cost models (a dated price catalog) and reports over request records."""
