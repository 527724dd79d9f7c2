"""Benchmarks and the load test: measurements of the service, not part of it (not in the image).

Run one with ``python -m bench NAME [options]``; ``python -m bench --help`` lists them.
"""
