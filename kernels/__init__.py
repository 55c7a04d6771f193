"""Workloads: the kernels infercost times, each with its float64 reference."""
