"""Use cases of the order service: handlers and unit of work."""
