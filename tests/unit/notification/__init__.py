"""Unit tests of the notification service."""
