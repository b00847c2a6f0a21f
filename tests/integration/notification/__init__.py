"""Integration tests of the notification service."""
