"""Use cases of the notification service: handlers and unit of work."""
