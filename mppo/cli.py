"""The ``mppo`` command: ``mppo dev up|down|status|restart|logs|pki``, ``mppo token``,
``mppo demo``.

Each command group registers itself with :func:`build_parser` through a ``register_*``
function and sets ``handler`` on its sub-parser; :func:`main` calls it with the parsed
arguments and a writer for user output.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TextIO

Handler = Callable[[argparse.Namespace, TextIO], int]


def _state_dir(args: argparse.Namespace) -> Path:
    from mppo.devstack.stack import default_state_dir

    return Path(args.state_dir).resolve() if args.state_dir else default_state_dir()


def _dev_up(args: argparse.Namespace, out: TextIO) -> int:
    from mppo.devstack.infra import InfraPorts
    from mppo.devstack.process import RestartPolicy
    from mppo.devstack.services import load_services, with_worker_role
    from mppo.devstack.stack import StackConfig, detach_up, run_stack

    state_dir = _state_dir(args)
    if args.replicas < 1:
        sys.stderr.write("mppo dev up: --replicas must be at least 1\n")
        return 2
    if args.nats_cluster != 1 and (args.nats_cluster < 3 or args.nats_cluster % 2 == 0):
        sys.stderr.write("mppo dev up: --nats-cluster is 1 or an odd number of nodes >= 3\n")
        return 2
    if args.detach:
        forwarded = [a for a in args.raw_argv if a not in ("--detach", "-d")]
        return detach_up(forwarded, state_dir, out)
    services = load_services(args.services)
    if args.worker_role:
        services = with_worker_role(services)
    config = StackConfig(
        state_dir=state_dir,
        ports=InfraPorts(args.pg_port, args.redis_port, args.nats_port),
        services=services,
        fsync=not args.no_fsync,
        ephemeral=args.ephemeral,
        replicas=args.replicas,
        nats_cluster=args.nats_cluster,
        restart=None if args.no_restart else RestartPolicy(max_restarts=args.max_restarts),
        observability=args.observability,
    )
    try:
        import uvloop

        runner: Callable[..., int] = uvloop.run
    except ImportError:  # pragma: no cover
        runner = asyncio.run
    return runner(run_stack(config, out))


def _dev_down(args: argparse.Namespace, out: TextIO) -> int:
    from mppo.devstack.stack import down

    return down(_state_dir(args), out, timeout=args.timeout, purge=args.purge)


def _dev_status(args: argparse.Namespace, out: TextIO) -> int:
    from mppo.devstack.stack import status

    return status(_state_dir(args), out)


def _dev_restart(args: argparse.Namespace, out: TextIO) -> int:
    from mppo.devstack.stack import request_restart

    return request_restart(_state_dir(args), args.name, out, timeout=args.timeout)


def _dev_logs(args: argparse.Namespace, out: TextIO) -> int:
    from mppo.devstack.stack import logs

    return logs(_state_dir(args), args.name, out, lines=args.lines, follow=args.follow)


def _dev_pki(args: argparse.Namespace, out: TextIO) -> int:
    from mppo.platform.tls import CA_KEY_FILE, DEV_NAMES, mint_dev_pki

    directory = Path(args.out).resolve()
    names = [n.strip() for n in args.names.split(",") if n.strip()] if args.names else DEV_NAMES
    try:
        mint_dev_pki(directory, names)
    except (OSError, ValueError) as exc:
        sys.stderr.write(f"mppo dev pki: {exc}\n")
        return 2
    out.write(
        f"DEVELOPMENT-ONLY PKI in {directory}: ca.pem, {', '.join(f'{n}.pem/.key' for n in names)}"
        ", user-token.key/.pub\n"
        f"Never use it in production; {CA_KEY_FILE} can sign any identity. Issue real "
        "certificates (spiffe://mppo/<name> URI SANs) from your own CA instead.\n"
    )
    return 0


def register_dev(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    dev = commands.add_parser("dev", help="run the whole mesh locally on embedded infrastructure")
    dev_commands = dev.add_subparsers(dest="dev_command", required=True, metavar="COMMAND")

    state = argparse.ArgumentParser(add_help=False)
    state.add_argument(
        "--state-dir", help="where state, data and logs live (default $MPPO_STATE_DIR or .mppo)"
    )

    up = dev_commands.add_parser(
        "up", parents=[state], help="start infrastructure and services; Ctrl-C stops everything"
    )
    up.add_argument("-d", "--detach", action="store_true", help="run in the background")
    up.add_argument("--pg-port", type=int, default=5432, help="Postgres port (0: any free)")
    up.add_argument("--redis-port", type=int, default=6379, help="Redis port (0: any free)")
    up.add_argument("--nats-port", type=int, default=4222, help="NATS port (0: any free)")
    up.add_argument(
        "--services",
        default=None,
        help="service list: module:ATTR or a JSON file (default $MPPO_DEV_SERVICES or all)",
    )
    up.add_argument("--no-fsync", action="store_true", help="Postgres without fsync (tests)")
    up.add_argument("--ephemeral", action="store_true", help="delete all data on stop")
    up.add_argument(
        "--replicas",
        type=int,
        default=1,
        help="copies of every scalable service (group-1, group-2, ...; a service's own "
        "`replicas` in the services file wins); callers balance round robin over them",
    )
    up.add_argument(
        "--nats-cluster",
        type=int,
        default=1,
        metavar="N",
        help="run N nats-servers (3) as one JetStream cluster; streams get 3 replicas",
    )
    up.add_argument(
        "--worker-role",
        action="store_true",
        help="run the group expiry scheduler as its own process (group-scheduler)",
    )
    up.add_argument(
        "--no-restart",
        action="store_true",
        help="stop the whole stack when a process dies instead of restarting it",
    )
    up.add_argument(
        "--max-restarts",
        type=int,
        default=5,
        help="restarts of one process within 2 minutes before it is left down (default 5)",
    )
    up.add_argument(
        "--observability",
        action="store_true",
        help="also run Prometheus (Debian's) scraping every process's /metrics, with the "
        "alert rules of deploy/prometheus loaded",
    )
    up.set_defaults(handler=_dev_up)

    dn = dev_commands.add_parser("down", parents=[state], help="stop a detached stack")
    dn.add_argument("--purge", action="store_true", help="also delete databases and streams")
    dn.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for the stop")
    dn.set_defaults(handler=_dev_down)

    st = dev_commands.add_parser("status", parents=[state], help="show a running stack")
    st.set_defaults(handler=_dev_status)

    rs = dev_commands.add_parser(
        "restart",
        parents=[state],
        help="restart a process of the running stack (a service name restarts every replica, "
        "one after the other)",
    )
    rs.add_argument("name", help="process (group-2, nats-1, postgres) or service (group, nats)")
    rs.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for it")
    rs.set_defaults(handler=_dev_restart)

    lg = dev_commands.add_parser(
        "logs", parents=[state], help="show a process's log (every replica's for a service)"
    )
    lg.add_argument("name", help="process (group-2, nats-1, postgres) or service (group, nats)")
    lg.add_argument("-n", "--lines", type=int, default=50, help="lines from the end (default 50)")
    lg.add_argument("-f", "--follow", action="store_true", help="keep printing new lines")
    lg.set_defaults(handler=_dev_logs)

    pki = dev_commands.add_parser(
        "pki",
        help="DEVELOPMENT ONLY: mint a CA, a certificate per process and the user-token keys",
        description="Writes (or completes) a development PKI in a directory, e.g. the "
        "./secrets/ that docker-compose.yml mounts: ca.pem/ca.key, <name>.pem/<name>.key "
        "(identity spiffe://mppo/<name>) and user-token.key/.pub. Idempotent. DEVELOPMENT "
        "ONLY: never deploy these to production.",
    )
    pki.add_argument("--out", required=True, help="directory to write into (e.g. secrets)")
    pki.add_argument(
        "--names",
        default=None,
        help="comma-separated identities (default: group,payment,order,notification,gateway,"
        "worker,operator)",
    )
    pki.set_defaults(handler=_dev_pki)


def _token(args: argparse.Namespace, out: TextIO) -> int:
    from gateway.devkeys import DEV_AUDIENCE, DEV_ISSUER, mint_token

    token = mint_token(
        _state_dir(args),
        args.sub,
        ttl_seconds=args.ttl,
        issuer=args.issuer or DEV_ISSUER,
        audience=args.audience or DEV_AUDIENCE,
    )
    out.write(f"{token}\n")
    return 0


def register_token(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    token = commands.add_parser(
        "token",
        help="mint a development JWT (ES256) the gateway under `mppo dev up` accepts",
        description="Signs with the dev key in <state dir>/jwt/ (generated on first use).",
    )
    token.add_argument("--sub", required=True, help="the user id (JWT subject)")
    token.add_argument("--ttl", type=int, default=3600, help="seconds until it expires")
    token.add_argument("--issuer", default=None, help="iss claim (default: the dev issuer)")
    token.add_argument("--audience", default=None, help="aud claim (default: mppo-api)")
    token.add_argument(
        "--state-dir", help="where the dev keys live (default $MPPO_STATE_DIR or .mppo)"
    )
    token.set_defaults(handler=_token)


def _demo(args: argparse.Namespace, out: TextIO) -> int:
    from mppo.demo import DemoTargets, demo

    targets = DemoTargets.from_state_dir(_state_dir(args), args.gateway, args.nats)
    return asyncio.run(demo(targets, out, wait_seconds=args.timeout))


def register_demo(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    demo = commands.add_parser(
        "demo",
        help="run one group order end to end against a running system and print its timeline",
        description="Needs a running system (`make run` / `mppo dev up`). Addresses come from "
        "the stack's state dir, else the defaults (gateway :8080, NATS :4222).",
    )
    demo.add_argument("--gateway", default=None, help="gateway base URL (default from state)")
    demo.add_argument("--nats", default=None, help="NATS URL for the event timeline")
    demo.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for the order")
    demo.add_argument(
        "--state-dir", help="the running stack's state dir (default $MPPO_STATE_DIR or .mppo)"
    )
    demo.set_defaults(handler=_demo)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mppo", description="MPPO developer tools")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    register_dev(commands)
    register_token(commands)
    register_demo(commands)
    return parser


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    raw = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(raw)
    # what follows "dev up", for re-running it detached
    args.raw_argv = raw[raw.index("up") + 1 :] if "up" in raw else []
    handler: Handler = args.handler
    import logging

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    return handler(args, out or sys.stdout)


if __name__ == "__main__":
    sys.exit(main())
