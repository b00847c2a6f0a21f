"""order_svc."""
