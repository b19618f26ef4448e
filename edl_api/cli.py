"""`edl-api serve | worker | migrate | create-admin | migrate-secrets | rotate-secrets-key |
check-config | run-local`, and `runs` / `feeds` against a running server (`cli_remote`)."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edl_api import __version__, cli_remote

if TYPE_CHECKING:  # imported when a command needs it: run-local starts ~0.14 s sooner
    from edl_api.settings import Settings


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from edl_api.app import create_app
    from edl_api.feeds.poll_protocol import FeedPollProtocol

    settings = _settings()
    lock = _instance_lock(settings, "serve")
    if lock is False:
        return 3
    # uvicorn re-raises a SIGTERM after its graceful shutdown, with the handler it found:
    # this one writes the batched log lines (the last second's, uvicorn's own) first.
    signal.signal(signal.SIGTERM, _flush_logs_then_die)
    # Our own logging config (api.log with redaction) is set in the lifespan.
    uvicorn.run(
        create_app(settings),
        host=args.host,
        port=args.port,
        log_config=None,
        http=FeedPollProtocol,  # answers a cached feed poll without an ASGI cycle
        access_log=False,  # `middleware.AccessLog` and the feed fast path write the line
        server_header=False,  # no "server: uvicorn" advertised, one header less per poll
        proxy_headers=args.proxy_headers,
        forwarded_allow_ips=args.forwarded_allow_ips,
        # A `?follow=true` log stream must not hold a SIGTERM shutdown open forever.
        timeout_graceful_shutdown=10,
    )
    return 0


def _flush_logs_then_die(signum: int, _frame: object) -> None:
    from edl_api.logging_setup import flush_logs

    flush_logs()
    signal.signal(signum, signal.SIG_DFL)
    signal.raise_signal(signum)


async def _worker(settings: Settings) -> None:
    """The dispatcher alone (no HTTP): claims queued runs until SIGTERM/SIGINT."""
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
    settings = _settings()
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
    settings = _settings()
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


def _admin_settings(args: argparse.Namespace) -> Settings | str:
    """The settings `create-admin` writes with, or why it refuses: run from another folder,
    the default ./data/edl.db would be a NEW database that `serve` never reads, and the key
    printed would be refused. A database is only created when named explicitly."""
    settings = _settings() if args.data_dir is None else _settings(data_dir=args.data_dir)
    explicit = args.data_dir is not None or bool(
        {"data_dir", "database_url"} & settings.model_fields_set
    )
    database = (settings.data_dir / "edl.db").resolve()
    if settings.database_url or explicit or database.exists():
        return settings
    return (
        f"no database at {database} (where `edl-api serve` run from {Path.cwd()} keeps it). "
        "Run this in the folder `serve` runs in, or name the database: --data-dir DIR, "
        "EDL_DATA_DIR or EDL_DATABASE_URL (to start a new one here: --data-dir data)"
    )


def _create_admin_cmd(args: argparse.Namespace) -> int:
    from sqlalchemy.exc import IntegrityError, SQLAlchemyError

    settings = _admin_settings(args)
    if isinstance(settings, str):
        print(f"error: {settings}", file=sys.stderr)
        return 1
    where = _display_url(settings.resolved_database_url)
    try:
        key = asyncio.run(_create_admin(settings, args.name, args.role, args.super))
    except IntegrityError:
        print(f"error: an admin account named {args.name!r} already exists in {where}",
              file=sys.stderr)
        return 1
    except (SQLAlchemyError, OSError) as exc:
        print(f"error: cannot write to the database {where}: {exc}", file=sys.stderr)
        return 1
    kind = "super-admin" if args.super else args.role
    print(f"created admin {args.name!r} ({kind}) in {where}", file=sys.stderr)
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
        lines = asyncio.run(_secrets_command(_settings(), args))
    except SecretsKeyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for line in lines:
        print(line)
    return 0


def _check_config_cmd(args: argparse.Namespace) -> int:
    from edl_api.engine.__main__ import check_config_main

    settings = _settings()  # warns of private destinations EDL_SSRF_ALLOW_* does not allow
    return check_config_main(args.file, settings.ssrf_allow_cidrs, settings.ssrf_allow_hosts)


def _run_local_cmd(args: argparse.Namespace) -> int:
    from edl_api.engine.__main__ import run_local_main

    return run_local_main(args.file, args.out, args.state)


def _explain_cmd(args: argparse.Namespace) -> int:
    from edl_api.engine.explain_local import explain_local

    status, lines = explain_local(args.file, args.value, args.json)
    for line in lines:
        print(line)
    return status


def _settings(**values: Any) -> Settings:
    """The service's settings (EDL_* environment, ./.env), imported on first use."""
    from edl_api.settings import Settings

    return Settings(**values)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edl-api", description=__doc__,
        epilog="Settings (database, keys, limits, EDL_AUTO_REFRESH_MINUTES …) come from EDL_* "
        "environment variables or ./.env; .env.example lists every one.",
    )
    parser.add_argument("--version", action="version", version=f"edl-api {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="apply migrations and serve the API")
    serve.add_argument(
        "--host", default="127.0.0.1",
        help="address to listen on (default 127.0.0.1: this machine only; no env variable)",
    )
    serve.add_argument(
        "--port", type=int, default=8000, help="TCP port (default 8000; no env variable)"
    )
    serve.add_argument(
        "--proxy-headers",
        action="store_true",
        help="trust X-Forwarded-* from --forwarded-allow-ips, behind nginx (default off)",
    )
    serve.add_argument(
        "--forwarded-allow-ips", default="127.0.0.1",
        help="proxies whose X-Forwarded-* are trusted, comma-separated (default 127.0.0.1)",
    )
    serve.set_defaults(func=_serve)

    worker = sub.add_parser("worker", help="run queued runs only (no HTTP); stops on SIGTERM")
    worker.set_defaults(func=_worker_cmd)

    migrate = sub.add_parser("migrate", help="upgrade the database schema to head")
    migrate.set_defaults(func=_migrate_cmd)

    admin = sub.add_parser("create-admin", help="create an admin account and print its key once")
    admin.add_argument("--name", required=True, help="the account's name (required)")
    admin.add_argument(
        "--role", choices=["operator", "reader"], default="operator",
        help="operator changes its profiles, reader only reads (default operator)",
    )
    admin.add_argument(
        "--super", action="store_true", help="make it a super-admin: every profile (default off)"
    )
    admin.add_argument(
        "--data-dir", type=Path,
        help="the folder of the SQLite database to write to (EDL_DATA_DIR, default ./data); "
        "a database that does not exist yet is only created when named here, in "
        "EDL_DATA_DIR or in EDL_DATABASE_URL",
    )
    admin.set_defaults(func=_create_admin_cmd)

    migrate_secrets = sub.add_parser(
        "migrate-secrets",
        help="turn ${EDL_SECRET_X} in configs into per-profile grants ${secret:X}",
    )
    migrate_secrets.add_argument(
        "--dry-run", action="store_true", help="show what would change, change nothing "
        "(default off)"
    )
    migrate_secrets.set_defaults(func=_secrets_cmd)

    rotate = sub.add_parser(
        "rotate-secrets-key", help="re-encrypt every profile secret under a new master key"
    )
    rotate.set_defaults(func=_secrets_cmd, dry_run=False)

    check = sub.add_parser("check-config", help="validate a pipeline config file")
    check.add_argument("file", help="the pipeline config (YAML)")
    check.set_defaults(func=_check_config_cmd)

    local = sub.add_parser("run-local", help="run a pipeline config offline, no server")
    local.add_argument("file", help="the pipeline config (YAML)")
    local.add_argument(
        "--out", required=True, help="folder for <type>.txt and report.json (required)"
    )
    local.add_argument(
        "--state", help="a previous run's OUT/state.json: TAXII/MISP refresh incrementally, "
        "max_age_days remembers first_seen (an ok run writes OUT/state.json); default: none"
    )
    local.set_defaults(func=_run_local_cmd)
    explain = sub.add_parser(
        "explain", help="run a config offline and say why a value is (not) in each feed"
    )
    explain.add_argument("file", help="the pipeline config (YAML); sources are fetched "
                         "with EDL_SSRF_ALLOW_* and EDL_SOURCE_DIR as for run-local")
    explain.add_argument("value", help="an IP, network, domain, URL or raw token")
    explain.add_argument("--json", action="store_true", help="print JSON (default: lines)")
    explain.set_defaults(func=_explain_cmd)

    cli_remote.add_parsers(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
