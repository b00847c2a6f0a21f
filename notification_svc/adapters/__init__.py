"""Adapters of the notification service: database tables, repositories, clients."""
