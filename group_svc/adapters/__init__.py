"""Adapters of the group service: database tables, repositories, clients."""
