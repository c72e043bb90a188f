"""The Tally benchmark harness; `bench/run.py` is its entry point."""
