"""Replicas on paper: peer addresses as balanced gRPC targets, the devstack's replica plan,
services files with counts, the worker role, the JetStream cluster's configuration, the
restart policy and the new ``mppo dev`` commands (no process started)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from mppo.cli import build_parser, main
from mppo.devstack.nats_server import EmbeddedNatsCluster
from mppo.devstack.process import RestartPolicy
from mppo.devstack.services import (
    DEFAULT_SERVICES,
    GROUP_SCHEDULER,
    ServiceDef,
    load_services,
    with_worker_role,
)
from mppo.devstack.stack import (
    announced_addr,
    isolated_up_args,
    logs,
    plan_replicas,
    resolve_names,
)
from mppo.platform.config import ConfigError, InfraConfig, listen_addr, service_addr
from mppo.platform.targets import ROUND_ROBIN_SERVICE_CONFIG, channel_options, grpc_target

# ---------------------------------------------------------------- targets


@pytest.mark.parametrize(
    ("value", "target"),
    [
        ("127.0.0.1:50051", "127.0.0.1:50051"),
        ("group:50051", "group:50051"),
        ("127.0.0.1:5001,127.0.0.1:5002", "ipv4:127.0.0.1:5001,127.0.0.1:5002"),
        (" 10.0.0.7:1 , 10.0.0.8:1 ", "ipv4:10.0.0.7:1,10.0.0.8:1"),
        ("[::1]:5001,[::1]:5002", "ipv6:[::1]:5001,[::1]:5002"),
        ("dns:///group.mppo.svc.cluster.local:50051", "dns:///group.mppo.svc.cluster.local:50051"),
        ("ipv4:127.0.0.1:1,127.0.0.1:2", "ipv4:127.0.0.1:1,127.0.0.1:2"),
    ],
)
def test_addresses_become_grpc_targets(value: str, target: str) -> None:
    assert grpc_target(value) == target


@pytest.mark.parametrize(
    "value",
    [
        "group",  # no port
        "group:port",
        "a:1,b:2",  # names in a list: use dns:///
        "127.0.0.1:1,[::1]:2",  # mixed families
        "127.0.0.1:1,,127.0.0.1:2",
        "127.0.0.1:0,127.0.0.1:2",
        "dns:///",
    ],
)
def test_malformed_addresses_are_refused_with_the_variable_name(value: str) -> None:
    with pytest.raises(ConfigError, match="MPPO_PAYMENT_ADDR"):
        service_addr({"MPPO_PAYMENT_ADDR": value}, "payment")


def test_every_peer_channel_balances_round_robin() -> None:
    single = dict(channel_options("127.0.0.1:50051"))
    assert json.loads(single["grpc.service_config"]) == {
        "loadBalancingConfig": [{"round_robin": {}}]
    }
    assert "grpc.default_authority" not in single
    listed = dict(channel_options("127.0.0.1:5001,127.0.0.1:5002"))
    assert listed["grpc.service_config"] == ROUND_ROBIN_SERVICE_CONFIG
    # the certificate is checked against the first address (dev certs carry 127.0.0.1)
    assert listed["grpc.default_authority"] == "127.0.0.1:5001"
    assert "grpc.default_authority" not in dict(channel_options("dns:///group:50051"))
    # a caller's own options win
    mine = channel_options("127.0.0.1:1", [("grpc.service_config", "{}")])
    assert mine == [("grpc.service_config", "{}")]


def test_a_process_listens_on_one_address_while_its_callers_get_a_list() -> None:
    env = {"MPPO_GROUP_ADDR": "127.0.0.1:5001,127.0.0.1:5002"}
    assert service_addr(env, "group") == "127.0.0.1:5001,127.0.0.1:5002"
    with pytest.raises(ConfigError, match="listens on"):
        listen_addr(env, "group")
    assert listen_addr({"MPPO_GROUP_ADDR": "0.0.0.0:50051"}, "group") == "0.0.0.0:50051"


def test_stream_replicas_setting() -> None:
    base = {
        "MPPO_GROUP_DATABASE_URL": "postgresql://h/db",
        "MPPO_REDIS_URL": "redis://h",
        "MPPO_NATS_URL": "nats://a:4222,nats://b:4222",
        "MPPO_ENV": "test",
    }
    assert InfraConfig.from_env("group", base).stream_replicas == 1
    three = InfraConfig.from_env("group", {**base, "MPPO_NATS_STREAM_REPLICAS": "3"})
    assert three.stream_replicas == 3
    with pytest.raises(ConfigError, match="MPPO_NATS_STREAM_REPLICAS"):
        InfraConfig.from_env("group", {**base, "MPPO_NATS_STREAM_REPLICAS": "2"})


# ---------------------------------------------------------------- the replica plan


def test_replicas_of_every_scalable_service_and_one_of_each_stand_in() -> None:
    plan = plan_replicas(with_worker_role(DEFAULT_SERVICES), replicas=2)
    counts = {name: len(replicas) for name, replicas in plan.items()}
    assert counts == {
        "group": 2,
        "group-scheduler": 2,
        "sandbox": 1,
        "paypal": 1,
        "razorpay": 1,
        "payment": 2,
        "merchant": 1,
        "order": 2,
        "smtp-sink": 1,
        "notification": 2,
        "gateway": 2,
    }
    assert [r.name for r in plan["payment"]] == ["payment-1", "payment-2"]
    assert [r.name for r in plan["sandbox"]] == ["sandbox"]
    assert plan["payment"][0].addr == "127.0.0.1:50052"  # the first keeps the service's port
    addrs = [r.addr for replicas in plan.values() for r in replicas]
    assert len(set(addrs)) == len(addrs)
    # gRPC peers are announced with every replica; anything else by its first
    assert announced_addr(plan["payment"][0].service, plan["payment"]) == ",".join(
        r.addr for r in plan["payment"]
    )
    assert announced_addr(plan["gateway"][0].service, plan["gateway"]) == plan["gateway"][0].addr
    scheduler = plan["group-scheduler"]
    assert announced_addr(scheduler[0].service, scheduler) == scheduler[0].addr
    assert [r.name for r in plan_replicas(DEFAULT_SERVICES, 1)["group"]] == ["group"]


def test_the_worker_role_takes_the_scheduler_out_of_group() -> None:
    services = with_worker_role(DEFAULT_SERVICES)
    names = [s.name for s in services]
    assert names[names.index("group") + 1] == "group-scheduler"
    group = services[names.index("group")]
    assert group.env["MPPO_GROUP_SCHEDULER"] == "off"
    assert GROUP_SCHEDULER.command[1:] == ("-m", "group_svc.standalone_scheduler")
    # it uses the group service's database, under the group service's variable
    assert GROUP_SCHEDULER.database == group.database
    assert GROUP_SCHEDULER.database_env == "MPPO_GROUP_DATABASE_URL"
    assert GROUP_SCHEDULER.addr_env == "MPPO_GROUP_SCHEDULER_ADDR"
    assert with_worker_role(services) == services


def test_services_file_counts(tmp_path: Path) -> None:
    path = tmp_path / "services.json"
    path.write_text(
        json.dumps(
            [
                {"name": "group", "command": ["{python}", "-m", "group_svc"], "replicas": 3},
                {"name": "web", "command": ["x"], "readiness": "http"},
                {"name": "api", "command": ["x"], "readiness": "http", "scalable": True},
            ]
        )
    )
    services = load_services(str(path))
    plan = plan_replicas(services, replicas=2)
    assert {name: len(r) for name, r in plan.items()} == {"group": 3, "web": 1, "api": 2}
    path.write_text(
        json.dumps([{"name": "web", "command": ["x"], "readiness": "http", "replicas": 2}])
    )
    with pytest.raises(ValueError, match="not scalable"):
        load_services(str(path))
    path.write_text(json.dumps([{"name": "a", "command": ["x"]}, {"name": "a", "command": ["y"]}]))
    with pytest.raises(ValueError, match="duplicate"):
        load_services(str(path))
    with pytest.raises(ValueError, match="at least 1"):
        plan_replicas([ServiceDef("a", ("x",), 0)], replicas=0)


def test_names_mean_a_process_or_every_replica() -> None:
    state = {
        "processes": [
            {"name": n}
            for n in ("postgres", "nats-1", "nats-2", "nats-3", "group-1", "group-2", "smtp-sink")
        ]
    }
    assert resolve_names(state, "group") == ["group-1", "group-2"]
    assert resolve_names(state, "group-2") == ["group-2"]
    assert resolve_names(state, "nats") == ["nats-1", "nats-2", "nats-3"]
    assert resolve_names(state, "smtp") == []
    assert resolve_names(state, "smtp-sink") == ["smtp-sink"]
    assert resolve_names(state, "payment") == []


def test_up_arguments_for_replicas_and_a_cluster(tmp_path: Path) -> None:
    args = isolated_up_args(tmp_path, tmp_path / "s.json", replicas=2, nats_cluster=3)
    assert args[-4:] == ["--replicas", "2", "--nats-cluster", "3"]
    parsed = build_parser().parse_args(args)
    assert (parsed.replicas, parsed.nats_cluster, parsed.detach) == (2, 3, True)
    assert "--replicas" not in isolated_up_args(tmp_path, tmp_path / "s.json")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--replicas", "0"], "--replicas"),
        (["--nats-cluster", "2"], "--nats-cluster"),
    ],
)
def test_bad_scale_arguments_are_refused(
    tmp_path: Path, argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["dev", "up", "--state-dir", str(tmp_path), *argv], io.StringIO()) == 2
    assert message in capsys.readouterr().err


# ---------------------------------------------------------------- cluster, supervisor, CLI


def test_cluster_node_configuration(tmp_path: Path) -> None:
    cluster = EmbeddedNatsCluster(tmp_path, 3)
    specs = cluster.specs()
    assert [s.name for s in specs] == ["nats-1", "nats-2", "nats-3"]
    assert cluster.url == ",".join(f"nats://127.0.0.1:{n.port}" for n in cluster.nodes)
    routes = {f"nats-route://127.0.0.1:{n.route_port}" for n in cluster.nodes}
    for node, spec in zip(cluster.nodes, specs, strict=True):
        text = node.config_file.read_text()
        assert spec.argv[1:] == ["-c", str(node.config_file)]
        assert "sync_interval: always" in text
        assert f'server_name: "{node.server_name}"' in text
        assert f'name: "{cluster.cluster_name}"' in text
        assert all(route in text for route in routes)
        assert f'store_dir: "{node.store_dir}"' in text
    assert len({n.server_name for n in cluster.nodes}) == 3
    with pytest.raises(ValueError, match="odd"):
        EmbeddedNatsCluster(tmp_path, 2)


def test_restart_backoff_doubles_up_to_a_ceiling() -> None:
    policy = RestartPolicy(max_restarts=5, window=60, backoff=0.5, max_backoff=4)
    assert [policy.delay(n) for n in range(1, 6)] == [0.5, 1.0, 2.0, 4.0, 4.0]


def test_restart_and_logs_commands(tmp_path: Path) -> None:
    parsed = build_parser().parse_args(["dev", "restart", "group", "--state-dir", str(tmp_path)])
    assert parsed.name == "group"
    parsed = build_parser().parse_args(["dev", "logs", "group-2", "-n", "5", "-f"])
    assert (parsed.name, parsed.lines, parsed.follow) == ("group-2", 5, True)
    out = io.StringIO()
    assert main(["dev", "restart", "group", "--state-dir", str(tmp_path)], out) == 3
    assert "no stack is running" in out.getvalue()


def test_logs_of_a_stopped_stack_are_read_from_the_state_dir(tmp_path: Path) -> None:
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "group-1.log").write_text("a\nb\nc\n")
    (tmp_path / "logs" / "group-2.log").write_text("x\n")
    (tmp_path / "logs" / "group-scheduler.log").write_text("not a replica of group\n")
    out = io.StringIO()
    assert logs(tmp_path, "group", out, lines=2) == 0
    assert out.getvalue().splitlines() == ["group-1 | b", "group-1 | c", "group-2 | x"]
    out = io.StringIO()
    assert logs(tmp_path, "group-scheduler", out, lines=5) == 0
    assert out.getvalue() == "not a replica of group\n"
    assert logs(tmp_path, "payment", io.StringIO()) == 2
