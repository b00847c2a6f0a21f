"""deploy/k8s, offline: both overlays render (scripts/render_k8s.py, the kustomize subset used)
and every object validates against the Kubernetes schema (kubernetes-validate, strict); and
the manifests match the code — every service, port, environment variable and secret a process
reads is there, the processes would start with what their pods get, probes speak the health
protocol on the right port, the autoscalers watch the consumers that exist."""

from __future__ import annotations

import ast
import importlib
import re
import shutil
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from mppo.platform.config import DEFAULT_ADDRS
from mppo.platform.tls import mint_dev_pki

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "k8s"
OVERLAYS = {"dev": "mppo-dev", "prod": "mppo"}
render_k8s: Any = importlib.import_module("scripts.render_k8s")

Obj = dict[str, Any]

#: gRPC service -> (package, durable consumers whose lag may scale it)
SERVICES = {
    "group": "group_svc",
    "payment": "payment_svc",
    "order": "order_svc",
    "notification": "notification_svc",
}
WORKER = "group-scheduler"
#: every Deployment -> the code it runs (packages scanned for the variables they read)
CODE: dict[str, tuple[str, tuple[str, ...]]] = {
    "group": ("group_svc", ()),
    WORKER: ("group_svc", ()),
    "payment": ("payment_svc", ("payment_svc/sandbox",)),
    "order": ("order_svc", ("order_svc/sandbox_merchant",)),
    "notification": ("notification_svc", ("notification_svc/smtp_sink",)),
}
PLATFORM = ("mppo/platform", "mppo/clients")

#: variables a pod may leave unset, and why (anything else the code reads must be set)
DEFAULTED: dict[str, str] = {
    "MPPO_FAULT": "crash-test fault injection, tests only",
    "MPPO_GRPC_PLAINTEXT": "development only; prod requires mutual TLS",
    "MPPO_TLS_DIR": "development PKI directory; pods name each file instead",
    "MPPO_USER_TOKEN_PRIVATE_KEY_FILE": "only the Python gateway signs user tokens",
    "MPPO_PROCESS_NAME": "the process names itself",
    "MPPO_OTEL_EXPORTER": "tracing exporter, off by default",
    "MPPO_METRICS_SAMPLE_SECONDS": "tuning, default 15 s",
    "MPPO_SMTP_SINK_ADDR": "the local SMTP sink of mppo dev up",
    "MPPO_SANDBOX_ADDR": "the development payment provider (off in prod)",
    "MPPO_SANDBOX_ENABLED": "the development payment provider (off in prod)",
    "MPPO_SANDBOX_API_KEY": "the development payment provider (off in prod)",
    "MPPO_SANDBOX_WEBHOOK_SECRET": "the development payment provider (off in prod)",
    "MPPO_MERCHANT_ADDR": "the local sandbox merchant; pods set MPPO_MERCHANT_BASE_URL",
    "MPPO_GROUP_SCHEDULER_ADDR": "read by the group service too; only the worker listens on it",
    "MPPO_GROUP_SCHEDULER": "the group Deployment sets it off; the worker always schedules",
    "MPPO_NOTIFY_WEBHOOK_URL": "optional: client-app webhooks (with their secret)",
    "MPPO_NOTIFY_WEBHOOK_SECRET": "optional: client-app webhooks (with their URL)",
    "MPPO_PAYMENT_RETURN_URL": "optional: where the provider page sends the payer back",
    "MPPO_PAYMENT_DEFAULT_PROVIDER": "stripe in prod",
    "MPPO_STRIPE_API_BASE": "the real Stripe API unless overridden",
    "MPPO_STRIPE_API_KEY": "only payment pods hold it (checked below); the others read the "
    "providers from MPPO_PAYMENT_PROVIDERS",
    "MPPO_GATEWAY_ADDR": "the local Python gateway of mppo dev up; pods set MPPO_GROUP_PAGE_URL",
}
#: prefixes of optional tuning and optional providers
DEFAULTED_PREFIXES = {
    "MPPO_RETENTION_": "retention windows (docs/retention.md), prod defaults",
    "MPPO_RAZORPAY_": "an optional provider, configured when used",
    "MPPO_PAYPAL_": "an optional provider, configured when used",
    "MPPO_PAYMENT_RE": "retry and reconcile tuning",
    "MPPO_PAYMENT_PROVIDER_TIMEOUT": "tuning",
    "MPPO_PAYMENT_AUTH_WARNING_SECONDS": "tuning",
    "MPPO_GROUP_HOST_GRACE": "business setting with a default",
    "MPPO_GROUP_REMINDER_LEAD": "business setting with a default",
    "MPPO_GROUP_HOLD_MARGIN": "business setting with a default (an hour before a hold lapses)",
    "MPPO_GROUP_SCHEDULER_INTERVAL": "tuning",
    "MPPO_GROUP_DEFAULT_DEADLINE": "business setting with a default (24 hours)",
    "MPPO_ORDER_": "saga tuning",
    "MPPO_MERCHANT_TIMEOUT": "tuning",
    "MPPO_MERCHANT_ATTEMPTS": "tuning",
    "MPPO_NOTIFY_": "delivery tuning",
    "MPPO_HOLD_WINDOW_": "how long each provider holds an authorization, provider defaults",
}
#: not variables: stream names
STREAM_NAMES = {"MPPO_GROUP", "MPPO_PAYMENT", "MPPO_ORDER", "MPPO_DLQ"}

#: Secrets the manifests reference and docs/kubernetes.md lists: created by the operator
#: (never committed), e.g. by cert-manager for the certificates
DOCS = REPO / "docs" / "kubernetes.md"


# ---------------------------------------------------------------- rendering


@pytest.fixture(scope="module", params=sorted(OVERLAYS))
def overlay(request: pytest.FixtureRequest) -> tuple[str, list[Obj]]:
    name = str(request.param)
    return name, render_k8s.render(K8S / "overlays" / name)


@pytest.fixture(scope="module")
def prod() -> list[Obj]:
    objects: list[Obj] = render_k8s.render(K8S / "overlays" / "prod")
    return objects


def _find(objects: list[Obj], kind: str, name: str) -> Obj:
    for obj in objects:
        if obj["kind"] == kind and obj["metadata"]["name"] == name:
            return obj
    raise AssertionError(f"no {kind} {name}")


def _of(objects: list[Obj], kind: str) -> list[Obj]:
    return [o for o in objects if o["kind"] == kind]


def _pod(obj: Obj) -> Obj:
    pod: Obj = obj["spec"]["template"]["spec"]
    return pod


def _container(obj: Obj) -> Obj:
    container: Obj = _pod(obj)["containers"][0]
    return container


def _env(objects: list[Obj], deployment: Obj) -> dict[str, Any]:
    """The container's environment: ConfigMap values, then its own (plain values as str,
    secret references as ("secret", name, key))."""
    container = _container(deployment)
    env: dict[str, Any] = {}
    for source in container.get("envFrom", []):
        data = _find(objects, "ConfigMap", source["configMapRef"]["name"])["data"]
        env.update(data)
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = item["value"]
        else:
            ref = item["valueFrom"].get("secretKeyRef")
            if ref is not None:
                env[item["name"]] = ("secret", ref["name"], ref["key"])
            else:
                env[item["name"]] = ("field", item["valueFrom"])
    return env


def test_both_overlays_render_and_validate_against_the_kubernetes_schema(
    overlay: tuple[str, list[Obj]],
) -> None:
    name, objects = overlay
    version = kubernetes_validate.latest_version()
    custom = []
    for obj in objects:
        assert obj["metadata"].get("labels", {}).get("app.kubernetes.io/part-of") == "mppo"
        if obj["kind"] != "Namespace":
            assert obj["metadata"]["namespace"] == OVERLAYS[name], obj["metadata"]
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.SchemaNotFoundError:
            custom.append(obj)
        except kubernetes_validate.ValidationError as exc:
            raise AssertionError(
                f"{name}: {obj['kind']} {obj['metadata']['name']}: {exc}"
            ) from None
    # only CloudNativePG's resources have no built-in schema; their fields are checked below
    assert {o["apiVersion"] for o in custom} == {"postgresql.cnpg.io/v1"}
    assert {o["kind"] for o in custom} == {"Cluster", "Database"}
    assert "kind: Secret" not in render_k8s.render_text(K8S / "overlays" / name)


def test_the_renderer_refuses_what_it_does_not_implement(tmp_path: Path) -> None:
    (tmp_path / "kustomization.yaml").write_text("resources: []\nconfigMapGenerator: []\n")
    with pytest.raises(render_k8s.KustomizeError, match="configMapGenerator"):
        render_k8s.render(tmp_path)
    (tmp_path / "kustomization.yaml").write_text(
        "resources: [cm.yaml]\npatches:\n  - patch: |-\n      metadata: {name: x}\n"
    )
    (tmp_path / "cm.yaml").write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n")
    with pytest.raises(render_k8s.KustomizeError, match="JSON 6902"):
        render_k8s.render(tmp_path)


def test_overlays_scale_the_way_they_say(overlay: tuple[str, list[Obj]]) -> None:
    name, objects = overlay
    deployments = {d["metadata"]["name"]: d for d in _of(objects, "Deployment")}
    assert set(deployments) == {*SERVICES, WORKER, "gateway", "redis"}
    cluster = _find(objects, "Cluster", "mppo-db")
    nats = _find(objects, "StatefulSet", "nats")
    assert nats["spec"]["replicas"] == 3  # R3 streams everywhere
    for hpa in _of(objects, "HorizontalPodAutoscaler"):
        assert hpa["spec"]["scaleTargetRef"]["name"] in deployments
    if name == "prod":
        assert cluster["spec"]["instances"] == 3
        assert cluster["spec"]["postgresql"]["synchronous"]["number"] == 1
        assert deployments["group"]["spec"]["replicas"] == 3
        assert _find(objects, "Service", "gateway")["spec"]["type"] == "LoadBalancer"
        for service in (*SERVICES, WORKER):
            assert deployments[service]["spec"]["replicas"] >= 2
        for hpa in _of(objects, "HorizontalPodAutoscaler"):
            assert hpa["spec"]["minReplicas"] >= 2
        for image in (_container(deployments[s])["image"] for s in (*SERVICES, WORKER)):
            assert image == "mppo/service:0.1.0"
    else:
        assert cluster["spec"]["instances"] == 1
        assert "synchronous" not in cluster["spec"]["postgresql"]
        assert all(d["spec"]["replicas"] == 1 for d in deployments.values())
        assert _container(deployments["group"])["image"] == "mppo/service:dev"
    namespace = _find(objects, "Namespace", OVERLAYS[name])
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


# ---------------------------------------------------------------- services, ports, probes


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_each_service_is_a_deployment_behind_a_headless_grpc_service(
    prod: list[Obj], service: str
) -> None:
    port = int(DEFAULT_ADDRS[service].rsplit(":", 1)[1])
    deployment = _find(prod, "Deployment", service)
    container = _container(deployment)
    assert container["command"] == ["python", "-m", SERVICES[service]]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["grpc"] == port
    svc = _find(prod, "Service", service)
    assert svc["spec"]["clusterIP"] == "None", "headless: DNS gives every pod to round robin"
    assert svc["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert [(p["port"], p["targetPort"]) for p in svc["spec"]["ports"]] == [(port, "grpc")]
    env = _env(prod, deployment)
    assert env[f"MPPO_{service.upper()}_ADDR"] == f"0.0.0.0:{port}"  # listens
    for other in SERVICES:  # and dials every other through its headless Service
        if other != service:
            other_port = DEFAULT_ADDRS[other].rsplit(":", 1)[1]
            assert env[f"MPPO_{other.upper()}_ADDR"] == f"dns:///{other}:{other_port}"
    probe = ["python", "-m", "mppo.platform.healthcheck", f"127.0.0.1:{port}"]
    assert container["readinessProbe"]["exec"]["command"] == probe
    assert container["livenessProbe"]["exec"]["command"] == [*probe, "--live"]
    assert container["startupProbe"]["exec"]["command"] == [*probe, "--live"]
    pdb = _find(prod, "PodDisruptionBudget", service)
    assert pdb["spec"]["selector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]


def test_the_worker_role_runs_the_scheduler_with_the_group_identity(prod: list[Obj]) -> None:
    worker = _find(prod, "Deployment", WORKER)
    container = _container(worker)
    assert container["command"] == ["python", "-m", "group_svc.standalone_scheduler"]
    env = _env(prod, worker)
    assert env["MPPO_GROUP_DATABASE_URL"] == ("secret", "mppo-group-db", "url")
    health_port = int(env["MPPO_GROUP_SCHEDULER_ADDR"].rsplit(":", 1)[1])
    assert container["readinessProbe"]["exec"]["command"][-1] == f"127.0.0.1:{health_port}"
    volumes = {v["name"]: v for v in _pod(worker)["volumes"]}
    assert volumes["tls"]["secret"]["secretName"] == "mppo-group-tls"
    # the group service itself leaves the scheduler to the worker role
    assert _env(prod, _find(prod, "Deployment", "group"))["MPPO_GROUP_SCHEDULER"] == "off"
    assert _find(prod, "HorizontalPodAutoscaler", WORKER)
    assert _find(prod, "PodDisruptionBudget", WORKER)


def test_envoy_finds_every_service_and_its_files(prod: list[Obj]) -> None:
    envoy = yaml.safe_load((REPO / "gateway" / "envoy.yaml").read_text())
    clusters = envoy["static_resources"]["clusters"]
    gateway = _find(prod, "Deployment", "gateway")
    container = _container(gateway)
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in _pod(gateway)["volumes"]}
    tls_files = {
        f"{path}/{item['path']}": item["key"]
        for path, name in mounts.items()
        if "secret" in volumes[name]
        for item in volumes[name]["secret"].get("items", [])
    }
    services = {s["metadata"]["name"]: s for s in _of(prod, "Service")}
    grpc_clusters = [
        c for c in clusters if any("grpc_health_check" in h for h in c.get("health_checks", []))
    ]
    assert len(grpc_clusters) == len(SERVICES)
    for cluster in grpc_clusters:
        (endpoint,) = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"]
        address = endpoint["endpoint"]["address"]["socket_address"]
        assert cluster["type"] == "STRICT_DNS"
        target = services[address["address"]]
        assert target["spec"]["clusterIP"] == "None"
        assert address["port_value"] in [p["port"] for p in target["spec"]["ports"]]
        tls = cluster["transport_socket"]["typed_config"]["common_tls_context"]
        (cert,) = tls["tls_certificates"]
        assert tls_files[cert["certificate_chain"]["filename"]] == "tls.crt"
        assert tls_files[cert["private_key"]["filename"]] == "tls.key"
        assert tls_files[tls["validation_context"]["trusted_ca"]["filename"]] == "ca.crt"
    assert volumes[mounts["/etc/mppo/tls"]]["secret"]["secretName"] == "mppo-gateway-tls"
    # the image carries the config where the command reads it
    dockerfile = (REPO / "deploy" / "gateway.Dockerfile").read_text()
    config = container["command"][container["command"].index("-c") + 1]
    assert f"COPY gateway/envoy.yaml {config}" in dockerfile
    transcoder_descriptor = "/etc/envoy/descriptors.binpb"
    assert transcoder_descriptor in (REPO / "gateway" / "envoy.yaml").read_text()
    assert f"COPY gateway/descriptors.binpb {transcoder_descriptor}" in dockerfile
    listener_port = envoy["static_resources"]["listeners"][0]["address"]["socket_address"]
    assert {p["name"]: p["containerPort"] for p in container["ports"]}["http"] == listener_port[
        "port_value"
    ]


def test_the_group_page_runs_beside_envoy_behind_its_cluster(
    prod: list[Obj], mounted_gateway: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Envoy's /g/ route goes to its `group_page` cluster (group-page:8081): a Service over
    the Python gateway that runs in every gateway pod, which would start with what it gets,
    and which the network policies let Envoy reach and let reach Redis."""
    envoy = yaml.safe_load((REPO / "gateway" / "envoy.yaml").read_text())
    (cluster,) = [c for c in envoy["static_resources"]["clusters"] if c["name"] == "group_page"]
    (endpoint,) = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"]
    address = endpoint["endpoint"]["address"]["socket_address"]
    service = _find(prod, "Service", address["address"])
    gateway = _find(prod, "Deployment", "gateway")
    assert service["spec"]["selector"] == gateway["spec"]["selector"]["matchLabels"]
    (port,) = service["spec"]["ports"]
    assert port["port"] == address["port_value"]
    page = next(c for c in _pod(gateway)["containers"] if c["name"] == port["targetPort"])
    assert page["command"] == ["python", "-m", "gateway"]
    assert page["image"].startswith("mppo/service")
    ports = {p["name"]: p["containerPort"] for p in page["ports"]}
    env = {item["name"]: item.get("value") for item in page["env"]}
    assert env["MPPO_GATEWAY_ADDR"] == f"0.0.0.0:{ports[port['targetPort']]}"
    assert page["readinessProbe"]["httpGet"]["path"] == "/healthz"
    # it would start: config of the Python gateway from the pod's environment and files
    from gateway.config import GatewayConfig

    values: dict[str, str] = {}
    for source in page.get("envFrom", []):
        values.update(_find(prod, "ConfigMap", source["configMapRef"]["name"])["data"])
    for item in page["env"]:
        if "value" in item:
            values[item["name"]] = item["value"]
        else:
            ref = item["valueFrom"]["secretKeyRef"]
            values[item["name"]] = PLACEHOLDERS[(ref["name"], ref["key"])]
    mounts = {m["mountPath"]: m["name"] for m in page["volumeMounts"]}
    volumes = {v["name"]: v for v in _pod(gateway)["volumes"]}
    for name, value in list(values.items()):
        if value.startswith("/etc/mppo/"):
            folder, _, file = value.rpartition("/")
            items = {i["path"]: i["key"] for i in volumes[mounts[folder]]["secret"]["items"]}
            assert file in items, (name, value)
            values[name] = str(mounted_gateway / items[file])
    config = GatewayConfig.from_env(values)
    assert config.environment == "prod"
    assert config.trust is not None
    assert config.trust.material is not None
    assert config.signer is not None
    assert config.trusted_proxies, "behind Envoy, the per-IP limit must meter the client"
    # network: Envoy (edge pods) may reach it, it may reach Redis, and Redis lets it in
    policies = {p["metadata"]["name"]: p["spec"] for p in _of(prod, "NetworkPolicy")}
    edge = {"app.kubernetes.io/component": "edge"}

    def admits(rules: list[Obj], peer: str, labels: dict[str, str], number: int) -> bool:
        return any(
            {"podSelector": {"matchLabels": labels}} in rule.get(peer, [])
            and number in [p["port"] for p in rule["ports"]]
            for rule in rules
        )

    assert admits(policies["gateway"]["ingress"], "from", edge, address["port_value"])
    assert admits(policies["gateway"]["egress"], "to", edge, address["port_value"])
    redis = {"app.kubernetes.io/name": "redis"}
    assert admits(policies["gateway"]["egress"], "to", redis, 6379)
    assert admits(policies["redis"]["ingress"], "from", edge, 6379)


@pytest.fixture(scope="module")
def mounted_gateway(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The gateway's certificate and the user-token keys, under the Secrets' key names."""
    root = tmp_path_factory.mktemp("gateway-secrets")
    pki = root / "pki"
    mint_dev_pki(pki, ["gateway"])
    shutil.copy(pki / "gateway.pem", root / "tls.crt")
    shutil.copy(pki / "gateway.key", root / "tls.key")
    shutil.copy(pki / "ca.pem", root / "ca.crt")
    shutil.copy(pki / "user-token.key", root / "user-token.key")
    shutil.copy(pki / "user-token.pub", root / "user-token.pub")
    return root


# ---------------------------------------------------------------- environment and secrets


def _variables_read(package: str, excluded: tuple[str, ...]) -> set[str]:
    """Every string constant of the code that is exactly an MPPO_* variable name."""
    names: set[str] = set()
    roots = [REPO / package, *(REPO / p for p in PLATFORM)]
    for root in roots:
        for path in root.rglob("*.py"):
            relative = str(path.relative_to(REPO))
            if relative.startswith(excluded) or "migrations" in path.parts:
                continue
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if (
                    isinstance(node, ast.Constant)
                    and isinstance(node.value, str)
                    and re.fullmatch(r"MPPO_[A-Z0-9_]*[A-Z0-9]", node.value)  # not a prefix
                ):
                    names.add(node.value)
    return names - STREAM_NAMES


def _defaulted(name: str) -> bool:
    return name in DEFAULTED or any(name.startswith(p) for p in DEFAULTED_PREFIXES)


@pytest.mark.parametrize("deployment", sorted(CODE))
def test_every_variable_the_code_reads_is_set_or_knowingly_defaulted(
    prod: list[Obj], deployment: str
) -> None:
    package, excluded = CODE[deployment]
    read = _variables_read(package, excluded)
    assert "MPPO_ENV" in read  # the scan finds what the code reads
    env = _env(prod, _find(prod, "Deployment", deployment))
    missing = sorted(v for v in read if v not in env and not _defaulted(v))
    assert not missing, (
        f"{deployment} reads {missing}: set them in deploy/k8s or add them to DEFAULTED "
        "with the reason a pod may leave them unset"
    )


def _secret_refs(objects: list[Obj]) -> Iterator[tuple[str, str]]:
    """(secret name, where) for every Secret a workload or CNPG resource references."""
    for obj in objects:
        where = f"{obj['kind']} {obj['metadata']['name']}"
        for text in re.findall(r"'secretName': '([^']+)'", repr(obj)):
            yield text, where
        for ref in re.findall(r"'secretKeyRef': \{'name': '([^']+)'", repr(obj)):
            yield ref, where
        for ref in re.findall(r"'passwordSecret': \{'name': '([^']+)'", repr(obj)):
            yield ref, where


def test_secrets_are_referenced_never_committed_and_all_documented(prod: list[Obj]) -> None:
    docs = DOCS.read_text(encoding="utf-8")
    referenced = dict(_secret_refs(prod))
    assert {"mppo-group-tls", "mppo-gateway-tls", "mppo-user-token", "mppo-nats"} <= set(referenced)
    for name, where in referenced.items():
        assert f"`{name}`" in docs, f"{where} references Secret {name}: list it in {DOCS.name}"
    assert not _of(prod, "Secret")
    # what compose requires as secrets, a pod reads from a Secret too
    for deployment, variables in {
        "group": ("MPPO_GROUP_PII_KEYS", "MPPO_GROUP_DATABASE_URL", "MPPO_REDIS_URL"),
        "payment": ("MPPO_STRIPE_API_KEY", "MPPO_STRIPE_WEBHOOK_SECRET", "MPPO_NATS_URL"),
        "order": ("MPPO_MERCHANT_SECRET", "MPPO_ORDER_DATABASE_URL"),
        "notification": ("MPPO_NOTIFICATION_DATABASE_URL",),
        WORKER: ("MPPO_GROUP_PII_KEYS", "MPPO_GROUP_DATABASE_URL"),
    }.items():
        env = _env(prod, _find(prod, "Deployment", deployment))
        for variable in variables:
            assert isinstance(env[variable], tuple), f"{deployment}: {variable} must be a Secret"
            assert env[variable][0] == "secret"


#: what each Secret holds, as the pods read it (placeholders in the right format)
PLACEHOLDERS: dict[tuple[str, str], str] = {
    ("mppo-group-db", "url"): "postgresql://group_svc:pw@mppo-db-rw:5432/group_db",
    ("mppo-payment-db", "url"): "postgresql://payment_svc:pw@mppo-db-rw:5432/payment_db",
    ("mppo-order-db", "url"): "postgresql://order_svc:pw@mppo-db-rw:5432/order_db",
    ("mppo-notification-db", "url"): "postgresql://notification_svc:pw@mppo-db-rw/notification_db",
    ("mppo-redis", "url"): "redis://:pw@redis:6379/0",
    ("mppo-nats", "url"): "nats://mppo:pw@nats:4222",
    ("mppo-group-pii", "keys"): "k1:dGVzdC1vbmx5LXRlc3Qtb25seS10ZXN0LW9ubHktMzI=",
    ("mppo-stripe", "api-key"): "sk_live_placeholder",
    ("mppo-stripe", "webhook-secret"): "whsec_placeholder",
    ("mppo-merchant", "secret"): "merchant-placeholder",
}


def _pod_environment(objects: list[Obj], deployment: str, root: Path) -> dict[str, str]:
    """What the container's process sees, with its secret files under ``root`` (the dev PKI
    copied under cert-manager's names) instead of /etc/mppo."""
    env: dict[str, str] = {}
    for name, value in _env(objects, _find(objects, "Deployment", deployment)).items():
        if isinstance(value, tuple):
            env[name] = PLACEHOLDERS[(value[1], value[2])]
        else:
            env[name] = str(value).replace("/etc/mppo/", f"{root}/")
    return env


@pytest.fixture(scope="module")
def mounted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """/etc/mppo as a pod of the group service sees it (certificate of identity group)."""
    root = tmp_path_factory.mktemp("etc-mppo")
    pki = root / "pki"
    mint_dev_pki(pki, ["group"])
    (root / "tls").mkdir()
    shutil.copy(pki / "group.pem", root / "tls" / "tls.crt")
    shutil.copy(pki / "group.key", root / "tls" / "tls.key")
    shutil.copy(pki / "ca.pem", root / "tls" / "ca.crt")
    (root / "user-token").mkdir()
    shutil.copy(pki / "user-token.pub", root / "user-token" / "user-token.pub")
    return root


def _starts(deployment: str, env: Mapping[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Run what the process reads at start-up against `env`; ConfigError if it would refuse."""
    from mppo.platform.trust import Trust

    for key in [k for k in __import__("os").environ if k.startswith("MPPO_")]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    if deployment in ("group", WORKER):
        from group_svc.adapters.pii import PiiKeyring
        from group_svc.config import GroupSettings, load_config
        from group_svc.standalone_scheduler import load_config as scheduler_config

        (scheduler_config if deployment == WORKER else load_config)()
        GroupSettings.from_env()
        PiiKeyring.from_env()
        trust_name = "group"
    elif deployment == "payment":
        from payment_svc.settings import PaymentSettings
        from payment_svc.settings import load_config as payment_config

        payment_config()
        PaymentSettings.from_env()
        trust_name = "payment"
    elif deployment == "order":
        from order_svc.config import load_config as order_config

        order_config()
        trust_name = "order"
    else:
        from notification_svc.config import load_config as notification_config

        notification_config()
        trust_name = "notification"
    trust = Trust.from_env(env, trust_name)
    assert trust.material is not None, "mutual TLS from the mounted files"
    assert trust.verifier is not None


@pytest.mark.parametrize("deployment", sorted(CODE))
def test_each_process_would_start_with_what_its_pod_gets(
    prod: list[Obj], deployment: str, mounted: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = _pod_environment(prod, deployment, mounted)
    assert env["MPPO_ENV"] == "prod"
    _starts(deployment, env, monkeypatch)


def test_a_pod_missing_a_secret_would_not_start(
    prod: list[Obj], mounted: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mppo.platform.config import ConfigError

    env = _pod_environment(prod, "payment", mounted)
    del env["MPPO_PAYMENT_DATABASE_URL"]
    with pytest.raises(ConfigError, match="MPPO_PAYMENT_DATABASE_URL"):
        _starts("payment", env, monkeypatch)


# ---------------------------------------------------------------- pods, autoscaling, network


def test_every_pod_is_non_root_read_only_and_bounded(overlay: tuple[str, list[Obj]]) -> None:
    _, objects = overlay
    for obj in objects:
        if obj["kind"] not in ("Deployment", "StatefulSet"):
            continue
        pod = _pod(obj)
        name = obj["metadata"]["name"]
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", name
        assert pod.get("automountServiceAccountToken") is False, name
        for container in pod["containers"]:
            security = container["securityContext"]
            assert security["readOnlyRootFilesystem"] is True, (name, container["name"])
            assert security["allowPrivilegeEscalation"] is False, (name, container["name"])
            assert security["capabilities"]["drop"] == ["ALL"], (name, container["name"])
            resources = container["resources"]
            assert {"cpu", "memory"} <= set(resources["requests"]), (name, container["name"])
            assert "memory" in resources["limits"], (name, container["name"])
            assert container.get("readinessProbe") or container["name"] == "exporter", name


def test_autoscalers_follow_the_seeds_signals(prod: list[Obj]) -> None:
    from notification_svc.entrypoints.consumers import GROUP_DURABLE
    from order_svc.entrypoints.consumers import DURABLE

    def metrics(name: str) -> list[Obj]:
        found: list[Obj] = _find(prod, "HorizontalPodAutoscaler", name)["spec"]["metrics"]
        return found

    for name in ("group", "gateway"):
        assert [m["resource"]["name"] for m in metrics(name)] == ["cpu"]
    assert metrics("payment")[0]["pods"]["metric"]["name"] == "mppo_payment_webhooks_per_second"
    for name, durable in (("order", DURABLE), ("notification", GROUP_DURABLE)):
        external = metrics(name)[0]["external"]["metric"]
        assert external["name"] == "mppo_consumer_pending"
        assert external["selector"]["matchLabels"] == {"consumer_name": durable}
    rules = yaml.safe_load(
        _find(prod, "ConfigMap", "mppo-prometheus-adapter-rules")["data"]["config.yaml"]
    )
    named = {r["name"]["as"] for r in [*rules["rules"], *rules["externalRules"]]}
    assert named == {"mppo_payment_webhooks_per_second", "mppo_consumer_pending"}
    for deployment in _of(prod, "Deployment"):
        if deployment["metadata"]["name"] != "redis":
            assert _find(prod, "HorizontalPodAutoscaler", deployment["metadata"]["name"])


def test_network_policies_admit_only_the_paths_the_system_uses(prod: list[Obj]) -> None:
    policies = {p["metadata"]["name"]: p["spec"] for p in _of(prod, "NetworkPolicy")}
    deny = policies["default-deny"]
    assert deny["podSelector"] == {}
    assert set(deny["policyTypes"]) == {"Ingress", "Egress"}
    assert "ingress" not in deny
    assert "egress" not in deny
    # only the edge accepts traffic from anywhere
    open_to_all = [
        name
        for name, spec in policies.items()
        for rule in spec.get("ingress", [])
        if "from" not in rule
    ]
    assert open_to_all == ["gateway"]
    assert policies["gateway"]["podSelector"]["matchLabels"] == {
        "app.kubernetes.io/component": "edge"
    }
    # services: from the gateway, each other and the worker
    sources = [
        peer["podSelector"]["matchLabels"]["app.kubernetes.io/component"]
        for rule in policies["services-ingress"]["ingress"]
        for peer in rule["from"]
    ]
    assert sorted(sources) == ["edge", "service", "worker"]
    # datastores: only pods marked as their clients (the services and the worker)
    clients = {"mppo.io/datastores": "true"}
    for store in ("postgres", "nats", "redis"):
        first = policies[store]["ingress"][0]["from"]
        assert first == [{"podSelector": {"matchLabels": clients}}], store
    labelled = {
        d["metadata"]["name"]
        for d in _of(prod, "Deployment")
        if _pod(d) and d["spec"]["template"]["metadata"]["labels"].get("mppo.io/datastores")
    }
    assert labelled == {*SERVICES, WORKER}


def test_nats_is_a_three_node_jetstream_cluster(prod: list[Obj]) -> None:
    nats = _find(prod, "StatefulSet", "nats")
    assert nats["spec"]["replicas"] == 3
    assert nats["spec"]["podManagementPolicy"] == "Parallel"
    conf = _find(prod, "ConfigMap", "nats-config")["data"]["nats.conf"]
    assert "sync_interval: always" in conf
    routes = re.findall(r"nats://(nats-\d)\.nats-headless:6222", conf)
    assert routes == ["nats-0", "nats-1", "nats-2"]
    assert _find(prod, "Service", "nats-headless")["spec"]["clusterIP"] == "None"
    assert _find(prod, "ConfigMap", "mppo-common")["data"]["MPPO_NATS_STREAM_REPLICAS"] == "3"
    assert _find(prod, "PodDisruptionBudget", "nats")["spec"]["maxUnavailable"] == 1


def test_postgres_is_a_cloudnativepg_cluster_with_a_database_per_service(
    prod: list[Obj],
) -> None:
    cluster = _find(prod, "Cluster", "mppo-db")
    spec = cluster["spec"]
    known = {
        "instances", "imageName", "primaryUpdateStrategy", "postgresql", "storage",
        "affinity", "managed", "monitoring",
    }  # fmt: skip
    assert set(spec) <= known, set(spec) - known  # fields of CNPG's Cluster v1 used here
    roles = {r["name"]: r for r in spec["managed"]["roles"]}
    databases = {d["spec"]["name"]: d["spec"] for d in _of(prod, "Database")}
    init = (REPO / "deploy" / "postgres-init.sql").read_text()
    assert set(databases) == set(re.findall(r"CREATE DATABASE (\w+);", init))
    for service in SERVICES:
        database = databases[f"{service}_db"]
        assert database["cluster"]["name"] == "mppo-db"
        role = roles[database["owner"]]  # one role per service, owning only its database
        assert role["login"] is True
        assert role["passwordSecret"]["name"] == f"mppo-{service}-db-role"
    assert len({d["owner"] for d in databases.values()}) == len(databases)
