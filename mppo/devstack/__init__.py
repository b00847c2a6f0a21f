"""mppo/devstack."""
