"""Adapters of the payment service: database tables, repositories, clients."""
