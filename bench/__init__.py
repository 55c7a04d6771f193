"""Measure: case planning, the measurement pipeline, backend adapters, timing, statistics,
validity gates, records and the runner."""
