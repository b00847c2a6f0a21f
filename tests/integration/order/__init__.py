"""Integration tests of the order service and the sandbox merchant."""
