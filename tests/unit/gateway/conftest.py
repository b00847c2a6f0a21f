"""Fixtures for the gateway's unit tests."""

from __future__ import annotations

import pytest

from gateway.descriptors import Catalog
from tests.unit.gateway.library import build_library


@pytest.fixture(scope="session")
def library(tmp_path_factory: pytest.TempPathFactory) -> Catalog:
    """The test library API as a catalog."""
    return Catalog(build_library(tmp_path_factory.mktemp("library")))


@pytest.fixture(scope="session")
def mppo() -> Catalog:
    """Our own API, from gateway/descriptors.binpb."""
    return Catalog.load()
