"""group_svc."""
