"""`edl-api serve | worker | migrate | create-admin | migrate-secrets | rotate-secrets-key |
check-config | run-local`."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

from edl_api.settings import Settings


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from edl_api.app import create_app

    settings = Settings()
    lock = _instance_lock(settings, "serve")
    if lock is False:
        return 3
    # Our own logging config (api.log with redaction) is set in the lifespan.
    uvicorn.run(
        create_app(settings),
        host=args.host,
        port=args.port,
        log_config=None,
        access_log=False,  # `middleware.AccessLog` and the feed fast path write the line
        server_header=False,  # no "server: uvicorn" advertised, one header less per poll
        proxy_headers=args.proxy_headers,
        forwarded_allow_ips=args.forwarded_allow_ips,
        # A `?follow=true` log stream must not hold a SIGTERM shutdown open forever.
        timeout_graceful_shutdown=10,
    )
    return 0


async def _worker(settings: Settings) -> None:
    """The dispatcher alone (no HTTP): claims queued runs until SIGTERM/SIGINT."""
    import signal

    from edl_api.db import create_engine, create_sessionmaker, ensure_schema
    from edl_api.logging_setup import configure_logging
    from edl_api.runs import logs
    from edl_api.runs.dispatcher import Dispatcher

    configure_logging(settings)
    logs.configure_engine_log(settings)
    engine = create_engine(settings)
    try:
        await ensure_schema(engine)
        dispatcher = Dispatcher(settings, create_sessionmaker(engine))
        stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stopping.set)
        await dispatcher.start()
        await stopping.wait()
        await dispatcher.stop()
    finally:
        logs.close_engine_log()
        await engine.dispose()


def _worker_cmd(_: argparse.Namespace) -> int:
    settings = Settings()
    lock = _instance_lock(settings, "worker")
    if lock is False:
        return 3
    asyncio.run(_worker(settings))
    return 0


def _instance_lock(settings: Settings, command: str) -> object:
    """SQLite: this process's hold on the database (False, said on stderr: another has it)."""
    from edl_api.instance_lock import InstanceLocked, acquire

    try:
        return acquire(settings, command)
    except InstanceLocked as exc:
        print(f"error: {exc}", file=sys.stderr)
        return False


async def _migrate(settings: Settings) -> None:
    from edl_api.db import create_engine, ensure_schema

    engine = create_engine(settings)
    try:
        await ensure_schema(engine)
    finally:
        await engine.dispose()


def _migrate_cmd(_: argparse.Namespace) -> int:
    settings = Settings()
    asyncio.run(_migrate(settings))
    print(f"database at head: {_display_url(settings.resolved_database_url)}")
    return 0


def _display_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


async def _create_admin(settings: Settings, name: str, role: str, is_super: bool) -> str:
    from edl_api.auth import keys
    from edl_api.db import create_engine, create_sessionmaker, ensure_schema
    from edl_api.models import AdminAccount

    engine = create_engine(settings)
    try:
        await ensure_schema(engine)
        new_key = keys.generate_key(keys.ADMIN_PREFIX, settings.bcrypt_rounds)
        async with create_sessionmaker(engine)() as session:
            session.add(
                AdminAccount(
                    name=name,
                    role=role,
                    is_super_admin=is_super,
                    key_id=new_key.key_id,
                    key_hash=new_key.key_hash,
                )
            )
            await session.commit()
        return new_key.plaintext
    finally:
        await engine.dispose()


def _create_admin_cmd(args: argparse.Namespace) -> int:
    key = asyncio.run(_create_admin(Settings(), args.name, args.role, args.super))
    # The only time this key is shown: print it alone on stdout so scripts can capture it.
    print(key)
    return 0


async def _secrets_command(settings: Settings, args: argparse.Namespace) -> list[str]:
    from edl_api.db import create_engine, create_sessionmaker, ensure_schema
    from edl_api.secrets import maintenance

    engine = create_engine(settings)
    try:
        await ensure_schema(engine)
        maker = create_sessionmaker(engine)
        if args.command == "rotate-secrets-key":
            count, what = await maintenance.rotate_master_key(settings, maker)
            return [f"{count} secret value(s) re-encrypted: {what}"]
        report = await maintenance.migrate_legacy_references(maker, dry_run=args.dry_run)
        lines = report.lines() or ["no config references ${EDL_SECRET_*}: nothing to do"]
        return [*lines, "(dry run: nothing changed)"] if args.dry_run else lines
    finally:
        await engine.dispose()


def _secrets_cmd(args: argparse.Namespace) -> int:
    from edl_api.secrets.crypto import SecretsKeyError

    try:
        lines = asyncio.run(_secrets_command(Settings(), args))
    except SecretsKeyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for line in lines:
        print(line)
    return 0


def _check_config_cmd(args: argparse.Namespace) -> int:
    from edl_api.engine.__main__ import check_config_main

    return check_config_main(args.file)


def _run_local_cmd(args: argparse.Namespace) -> int:
    from edl_api.engine.__main__ import run_local_main

    return run_local_main(args.file, args.out)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edl-api", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="apply migrations and serve the API")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument(
        "--proxy-headers",
        action="store_true",
        help="trust X-Forwarded-* from --forwarded-allow-ips (behind nginx)",
    )
    serve.add_argument("--forwarded-allow-ips", default="127.0.0.1")
    serve.set_defaults(func=_serve)

    worker = sub.add_parser("worker", help="run queued runs only (no HTTP); stops on SIGTERM")
    worker.set_defaults(func=_worker_cmd)

    migrate = sub.add_parser("migrate", help="upgrade the database schema to head")
    migrate.set_defaults(func=_migrate_cmd)

    admin = sub.add_parser("create-admin", help="create an admin account and print its key once")
    admin.add_argument("--name", required=True)
    admin.add_argument("--role", choices=["operator", "reader"], default="operator")
    admin.add_argument("--super", action="store_true", help="make it a super-admin")
    admin.set_defaults(func=_create_admin_cmd)

    migrate_secrets = sub.add_parser(
        "migrate-secrets",
        help="turn ${EDL_SECRET_X} in configs into per-profile grants ${secret:X}",
    )
    migrate_secrets.add_argument("--dry-run", action="store_true", help="change nothing")
    migrate_secrets.set_defaults(func=_secrets_cmd)

    rotate = sub.add_parser(
        "rotate-secrets-key", help="re-encrypt every profile secret under a new master key"
    )
    rotate.set_defaults(func=_secrets_cmd, dry_run=False)

    check = sub.add_parser("check-config", help="validate a pipeline config file")
    check.add_argument("file")
    check.set_defaults(func=_check_config_cmd)

    local = sub.add_parser("run-local", help="run a pipeline config offline, no server")
    local.add_argument("file")
    local.add_argument("--out", required=True, help="folder for <type>.txt and report.json")
    local.set_defaults(func=_run_local_cmd)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
