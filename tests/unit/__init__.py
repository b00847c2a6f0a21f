"""Unit tests (fast, no processes)."""
