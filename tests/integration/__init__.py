"""Integration tests (real infrastructure and processes)."""
