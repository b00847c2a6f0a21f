"""The Python edge gateway: REST/JSON to gRPC transcoding driven by `descriptors.binpb`, JWT
authentication, rate limiting, CORS and OpenAPI (`python -m gateway`).

Envoy (`envoy.yaml`) is the production edge; this gateway follows the same rules so the system
runs on machines without Envoy. Both are checked against one table of REST bindings derived
from the descriptor set (tests/unit/test_deploy_config.py).
"""
