"""Benchmarks (``make bench`` / ``python -m bench``): measurements written to ``bench/results/``, never asserted."""
