"""Benchmarks of sqlalchemy-rs-iam against the usual alternatives (run ``python benchmarks/run.py``)."""
