"""Adapters of the order service: database tables, repositories, clients."""
