"""Helpers of ``benchmarks/run.py``: measuring, trees, tool adapters, reports."""
