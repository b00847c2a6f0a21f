"""The operator's view as code: the Grafana dashboard (needs the dev extra's
grafana-foundation-sdk; nothing at run time imports this package)."""
