"""Helpers shared by the test tiers: starting real service processes and waiting on them."""
