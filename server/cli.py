"""The `switchboard` command (DESIGN §7)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence

from server.backup import BackupError
from server.settings import Settings, get_settings
from server.state import services_of

log = logging.getLogger("switchboard")


class CommandError(Exception):
    pass


async def _check_migrated(settings: Settings) -> None:
    from server import migrate
    from server.db import Database

    if settings.is_sqlite:
        import os.path

        path = settings.database_url.split(":///", 1)[1]
        if path != ":memory:" and not os.path.exists(path):  # noqa: ASYNC240 (one stat at start-up)
            raise CommandError(f"no database at {path}: run `switchboard migrate` first")
    db = Database(settings.database_url)
    try:
        have = await migrate.current(db.engine)
    except Exception as exc:
        raise CommandError(
            f"cannot reach the database ({settings.database_url.split('@')[-1]}): {exc}"
        ) from None
    finally:
        await db.dispose()
    want = migrate.head(settings.database_url)
    if have != want:
        raise CommandError(
            f"the database is not migrated (at {have or 'nothing'}, need {want}): run `switchboard migrate` first"
        )


def _is_loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _url_host(host: str) -> str:
    """The bind address as a URL host: an unspecified bind is reached on loopback."""
    if host in ("0.0.0.0", ""):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


def cmd_serve(args: argparse.Namespace, settings: Settings) -> None:
    import uvicorn

    from realtime.wsprotocol import WebSocketProtocol
    from server.app import create_app
    from server.logs import setup_logging
    from server.runtime import settle_heap

    if settings.uses_development_secret and not _is_loopback(args.host):
        raise CommandError(
            f"serving on {args.host} with the public development secret: anyone could sign in as anyone. "
            "Set SWITCHBOARD_SECRET_KEY (e.g. to the output of `python -c 'import secrets; "
            "print(secrets.token_hex(32))'`), or serve on 127.0.0.1"
        )
    asyncio.run(_check_migrated(settings))
    # `public_url` stays as configured: unset, webhook URLs are the URL as requested (with the
    # scheme a trusted proxy forwarded). The sandbox still needs an address to post back to.
    update = {
        "embedded_worker": not args.no_worker,
        "serve_url": f"http://{_url_host(args.host)}:{args.port}",
    }
    settings = settings.model_copy(update=update)
    setup_logging(settings)
    app = create_app(settings)
    # /ws answered before the middleware stack, on our lean WebSocket protocol: an idle socket
    # costs about 9-10 KiB instead of 22 (docs/decisions.md).
    services = services_of(app)
    assert services.realtime is not None
    asgi = services.realtime.wrap(app)
    print(f"Switchboard serving on http://{args.host}:{args.port}/", flush=True)
    settle_heap()
    uvicorn.run(
        asgi,
        host=args.host,
        port=args.port,
        log_level="warning",
        lifespan="on",
        proxy_headers=True,
        forwarded_allow_ips=args.forwarded_allow_ips,
        ws=WebSocketProtocol,
        ws_max_size=settings.ws_max_message_bytes,  # a larger frame or message: 1009, unread
    )


def cmd_worker(_args: argparse.Namespace, settings: Settings) -> None:
    from server.logs import setup_logging

    asyncio.run(_check_migrated(settings))
    from server.messages.worker import run_worker
    from server.runtime import settle_heap

    setup_logging(settings)

    settle_heap()
    asyncio.run(run_worker(settings))


def cmd_migrate(_args: argparse.Namespace, settings: Settings) -> None:
    from server import migrate

    migrate.upgrade(settings.database_url)
    print(f"database at {migrate.head(settings.database_url)}")


def cmd_createuser(args: argparse.Namespace, settings: Settings) -> None:
    from server.auth.models import Role
    from server.seed import create_user_cli

    try:
        role = Role(args.role)
    except ValueError:
        raise CommandError("role must be admin, agent or viewer") from None
    asyncio.run(_check_migrated(settings))
    user_id = asyncio.run(
        create_user_cli(
            settings, workspace=args.workspace, email=args.email, password=args.password, role=role
        )
    )
    print(f"user {args.email} ({role.value}) is #{user_id} in workspace {args.workspace!r}")


def cmd_demo(_args: argparse.Namespace, settings: Settings) -> None:
    from server.seed import seed_demo

    asyncio.run(_check_migrated(settings))
    login = asyncio.run(seed_demo(settings))
    base = (settings.public_url or "http://127.0.0.1:8000").rstrip("/")  # `serve`'s default address
    print(f"\n  Demo workspace ready. Sign in at {base}/login")
    print(f"    email:    {login.email}")
    print(f"    password: {login.password}\n", flush=True)


def cmd_backup(args: argparse.Namespace, settings: Settings) -> None:
    from server.backup import backup

    asyncio.run(backup(settings, args.file))
    print(f"backup written to {args.file}")


def cmd_restore(args: argparse.Namespace, settings: Settings) -> None:
    from server.backup import restore

    asyncio.run(restore(settings, args.file))
    print(f"restored from {args.file}")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="switchboard", description="Switchboard CRM messaging platform")
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve", help="serve the web app (with the dispatcher inside unless --no-worker)")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8000)
    s.add_argument("--no-worker", action="store_true", help="do not run the dispatcher in this process")
    s.add_argument(
        "--forwarded-allow-ips",
        default=None,
        help="proxies whose X-Forwarded-For/-Proto are trusted (default: $FORWARDED_ALLOW_IPS, else 127.0.0.1,::1)",
    )
    s.set_defaults(func=cmd_serve)
    sub.add_parser("worker", help="run the dispatcher alone").set_defaults(func=cmd_worker)
    sub.add_parser("migrate", help="upgrade the database to the newest schema").set_defaults(func=cmd_migrate)
    c = sub.add_parser("createuser", help="create a user (and the workspace if new)")
    c.add_argument("--workspace", required=True)
    c.add_argument("--email", required=True)
    c.add_argument("--password", required=True)
    c.add_argument("--role", default="admin", choices=["admin", "agent", "viewer"])
    c.set_defaults(func=cmd_createuser)
    sub.add_parser("demo", help="seed a demo workspace and print its login").set_defaults(func=cmd_demo)
    b = sub.add_parser("backup", help="write a backup of the database to FILE")
    b.add_argument("file")
    b.set_defaults(func=cmd_backup)
    r = sub.add_parser("restore", help="restore the database from FILE")
    r.add_argument("file")
    r.set_defaults(func=cmd_restore)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        settings = get_settings()
        args.func(args, settings)
    except (CommandError, BackupError) as exc:
        print(f"switchboard {args.command}: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:  # settings errors, e.g. a missing secret in production
        print(f"switchboard {args.command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
