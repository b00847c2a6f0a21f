"""MPPO — Multi-Party Payment Orchestrator: shared platform, contracts and tooling."""
