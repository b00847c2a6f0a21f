"""payment_svc."""
