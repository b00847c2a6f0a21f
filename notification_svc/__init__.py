"""notification_svc."""
