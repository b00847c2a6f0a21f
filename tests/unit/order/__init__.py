"""Unit tests of the order service."""
