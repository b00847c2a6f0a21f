"""Payment service. Payment intents, provider adapters, verified webhooks and reconciliation."""
