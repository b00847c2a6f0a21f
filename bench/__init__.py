"""MPPO load benchmark: group checkouts through the REST gateway against the raw ceiling of the
same Postgres and JetStream work (``python -m bench``; results in ``bench/RESULTS.md``)."""
