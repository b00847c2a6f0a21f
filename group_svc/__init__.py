"""Group service. Group orders: cart, members, split, lifecycle, expiry and fallback."""
