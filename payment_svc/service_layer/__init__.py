"""Use cases of the payment service: handlers and unit of work."""
