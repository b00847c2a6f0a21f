"""mppo/platform."""
