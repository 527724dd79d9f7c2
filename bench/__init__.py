"""Benchmarks and the load test: measurements of the service, not part of it (not in the image)."""
