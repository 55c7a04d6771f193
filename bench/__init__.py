"""The harness: backend adapters, timing, statistics, validity gates, records, the runner."""
