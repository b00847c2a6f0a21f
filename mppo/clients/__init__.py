"""One client per service, shared by every caller of that service (see each module)."""
