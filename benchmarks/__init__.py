"""Benchmarks of the service (`make bench`): ratios and counts, not timed assertions."""
