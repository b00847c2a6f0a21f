"""JWT verification at the edge (docs/design.md §8): the shared verifier in
:mod:`mppo.platform.idp_jwt`, which the services use too for the JWT Envoy forwards.

Re-exported here for the gateway's modules and tests.
"""

from __future__ import annotations

from mppo.platform.idp_jwt import (
    ALGORITHM,
    LEEWAY_SECONDS,
    AuthError,
    Identity,
    JwksSource,
    JwtVerifier,
)

__all__ = ["ALGORITHM", "LEEWAY_SECONDS", "AuthError", "Identity", "JwksSource", "JwtVerifier"]
