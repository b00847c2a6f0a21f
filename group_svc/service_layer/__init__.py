"""Use cases of the group service: handlers and unit of work."""
