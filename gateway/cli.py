"""Command line: run the gateway, check a config, make a signing key, or run the demo."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from gateway.config import ConfigError, load_config

DEFAULT_CONFIG = "/etc/hamrah-gateway/gateway.yaml"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hamrah-gateway",
        description="Authenticating reverse proxy: validates the session cookie before a web app.",
    )
    parser.add_argument("--config", type=Path, help=f"YAML config file (default {DEFAULT_CONFIG})")
    parser.add_argument("--check", action="store_true", help="validate the config and exit")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    demo = commands.add_parser(
        "demo", help="run gateway, demo frontend and demo auth API in one process"
    )
    demo.add_argument("--host", default="127.0.0.1")
    demo.add_argument("--port", type=int, default=8080, help="the gateway's port (default 8080)")
    frontend = commands.add_parser("demo-frontend", help="run only the demo frontend")
    frontend.add_argument("--listen", default="0.0.0.0:3000")
    frontend.add_argument("--api-url", default="http://127.0.0.1:8787")
    api = commands.add_parser("demo-api", help="run only the demo auth API")
    api.add_argument("--listen", default="0.0.0.0:8787")
    keygen = commands.add_parser(
        "keygen", help="write a new EC P-256 private key (PEM, mode 0600) for assertion.keys"
    )
    keygen.add_argument("path", type=Path, help="the file to create; an existing one is kept")
    selfsigned = commands.add_parser(
        "tls-selfsigned", help="make a local CA and a certificate (kept if already there)"
    )
    selfsigned.add_argument("--dir", type=Path, default=Path("/etc/hamrah-gateway/tls"))
    selfsigned.add_argument("--host", action="append", help="a name or IP (default localhost)")
    return parser


def _keygen(path: Path) -> int:
    from gateway.keys import write_new_key

    try:
        key = write_new_key(path)
    except FileExistsError:
        print(f"{path}: already exists; keygen never overwrites a key", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"{path}: cannot create: {exc.strerror or exc}", file=sys.stderr)
        return 1
    print(f"{path}: new P-256 key, kid {key.kid}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "demo":
        from gateway.demo_runner import run_demo

        return run_demo(args.host, args.port)
    if args.command == "keygen":
        return _keygen(args.path)
    if args.command in ("demo-frontend", "demo-api"):
        from gateway.demo_runner import run_demo_service

        return run_demo_service(args.command, args.listen, getattr(args, "api_url", ""))
    if args.command == "tls-selfsigned":
        from gateway.selfsigned import make_selfsigned

        made = make_selfsigned(args.dir, args.host or ["localhost", "127.0.0.1"])
        print(f"{args.dir}: {'made' if made else 'kept'} ca.pem, fullchain.pem, privkey.pem")
        return 0
    path = args.config or Path(DEFAULT_CONFIG)
    try:
        config = load_config(path)
        if args.check:
            print(f"{path}: ok")
            return 0
        from gateway.workers import CONTROL_ENV, run_supervisor

        control = os.environ.get(CONTROL_ENV)
        if control is None and config.worker_count > 1:
            return run_supervisor(path, config)
        from gateway.service import run_service

        return run_service(path, control)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return ConfigError.exit_code


if __name__ == "__main__":
    sys.exit(main())
