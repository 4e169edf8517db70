"""Benchmarks of ue-flow against bare Dramatiq; run ``python bench/run.py``."""
