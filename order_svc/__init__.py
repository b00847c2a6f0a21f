"""Order service. Order placement saga with the merchant: validate, place, capture, compensate."""
