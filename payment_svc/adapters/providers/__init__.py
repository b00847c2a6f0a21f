"""Payment provider adapters behind one interface (`base.PaymentProvider`)."""
