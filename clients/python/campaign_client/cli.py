"""campaignctl: the campaign service from a shell.

    campaignctl list --org 1
    campaignctl schedule 42 "2027-06-01 10:00"      # read in the edition's timezone
    campaignctl watch 42                            # live progress until the campaign ends
    campaignctl import-users users.csv --org 1 --edition 7

Exit codes: 0 ok, 1 any other failure, 2 usage, 3 not found, 4 invalid argument or failed
precondition (also a stale etag), 5 unavailable or timed out, 130 interrupted. Errors go to
stderr as "campaignctl: ...". The server comes from --target or CAMPAIGNS_TARGET (default
127.0.0.1:50051), a bearer token from --token or CAMPAIGNS_TOKEN.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from rich.console import Console

from campaign_client import commands, render
from campaign_client.client import CampaignClient
from campaign_client.csvusers import CsvError
from campaign_client.errors import (
    AbortedError,
    CampaignClientError,
    DeadlineExceededError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    UnavailableError,
)

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_NOT_FOUND, EXIT_INVALID, EXIT_UNAVAILABLE = 0, 1, 2, 3, 4, 5
EXIT_INTERRUPTED = 130
DEFAULT_TARGET = "127.0.0.1:50051"
EXIT_CODES: list[tuple[type[CampaignClientError], int]] = [
    (NotFoundError, EXIT_NOT_FOUND),
    (InvalidArgumentError, EXIT_INVALID),
    (FailedPreconditionError, EXIT_INVALID),
    (AbortedError, EXIT_INVALID),
    (UnavailableError, EXIT_UNAVAILABLE),
    (DeadlineExceededError, EXIT_UNAVAILABLE),
]
Command = Callable[[CampaignClient, argparse.Namespace, Console], int]


def _connection_options() -> argparse.ArgumentParser:
    """Options every command takes, before or after its name."""
    common = argparse.ArgumentParser(add_help=False, argument_default=argparse.SUPPRESS)
    add = common.add_argument
    add("--target", help=f"server host:port (env CAMPAIGNS_TARGET; default {DEFAULT_TARGET})")
    add("--token", help="bearer token sent as authorization metadata (env CAMPAIGNS_TOKEN)")
    add("--timeout", type=float, help="deadline of each call in seconds (default 10)")
    add("--tls", action="store_true", help="use TLS (the default is plaintext)")
    add("--ca-cert", help="PEM root certificates to trust (implies --tls)")
    add("--client-cert", help="PEM client certificate for mutual TLS (implies --tls)")
    add("--client-key", help="PEM key of --client-cert")
    add("--json", action="store_true", help="print results as JSON")
    return common


def _id(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("id", type=int, help="campaign id")


def _request_id(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--request-id", help="idempotency key (default: a new one per run)")


def _content(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--channel", type=commands.channel_value, help="sms or email")
    parser.add_argument("--sms-body", help="text of an SMS campaign")
    parser.add_argument("--email-message", type=int, help="email message id (email campaigns)")
    parser.add_argument(
        "--scheduled-at",
        help="'YYYY-MM-DD HH:MM' in the edition's timezone, or ISO 8601 with an offset",
    )


class _Commands:
    """Adds the subcommands, each with the connection options too."""

    def __init__(self, sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
        self.sub, self.common = sub, common

    def add(self, name: str, handler: Command, help_text: str) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = self.sub.add_parser(
            name, parents=[self.common], help=help_text, description=help_text
        )
        parser.set_defaults(handler=handler)
        return parser

    def create_and_list(self) -> None:
        create = self.add("create", commands.create, "create a draft campaign")
        for flag, kind in (("--org", int), ("--edition", int), ("--segment", int), ("--name", str)):
            create.add_argument(flag, type=kind, required=True)
        _content(create)
        _request_id(create)
        create.add_argument("-q", "--quiet", action="store_true", help="print only the new id")
        lister = self.add("list", commands.list_, "list campaigns as a table")
        for flag in ("--org", "--edition", "--page", "--page-size"):
            lister.add_argument(flag, type=int)
        lister.add_argument("--channel", type=commands.channel_value, help="sms or email")
        lister.add_argument("--status", type=commands.status_value, help="e.g. draft, sending")
        lister.add_argument("--search", help="part of the name, any case")
        lister.add_argument(
            "--ordering",
            help="created, modified, name, scheduled_at or "
            "total_recipients; a leading - sorts descending (default -created)",
        )

    def changes(self) -> None:
        _id(self.add("get", commands.get, "show one campaign"))
        update = self.add(
            "update", commands.update, "change fields of a draft or scheduled campaign"
        )
        _id(update)
        update.add_argument("--name")
        update.add_argument("--segment", type=int, help="segment id")
        update.add_argument("--etag", help="update only if the campaign still has this etag")
        _content(update)
        schedule = self.add("schedule", commands.schedule, "send a campaign at a time")
        _id(schedule)
        schedule.add_argument(
            "when",
            nargs="*",
            help="'YYYY-MM-DD HH:MM' in the edition's "
            "timezone, or ISO 8601 with an offset; omitted: the time it has",
        )
        _request_id(schedule)
        for name, handler, text in (
            ("send-now", commands.send_now, "start a campaign now"),
            ("cancel", commands.cancel, "stop a campaign"),
        ):
            parser = self.add(name, handler, text)
            _id(parser)
            _request_id(parser)
        _id(self.add("delete", commands.delete, "delete a campaign that is not sending"))

    def progress(self) -> None:
        _id(self.add("stats", commands.stats, "show a campaign's delivery figures"))
        watcher = self.add("watch", commands.watch_, "follow a campaign live until it ends")
        _id(watcher)
        watcher.add_argument("--plain", action="store_true", help="a line per change, no bar")
        imports = self.add("import-users", commands.import_users, "import users from a CSV")
        imports.add_argument(
            "file",
            help="CSV with external_id,email,phone,first_name,"
            "last_name,language,email_consent,sms_consent; other columns "
            "become attributes",
        )
        imports.add_argument("--org", type=int, required=True)
        imports.add_argument("--edition", type=int, help="edition every user joins")
        imports.add_argument("--batch-size", type=int, default=500)
        imports.add_argument("--strict", action="store_true", help="exit 4 if any row is rejected")
        imports.add_argument(
            "--show-rejections",
            type=int,
            default=20,
            metavar="N",
            help="list at most N rejected rows (default 20)",
        )
        imports.add_argument("--plain", action="store_true", help="no progress bar")


def build_parser() -> argparse.ArgumentParser:
    common = _connection_options()
    parser = argparse.ArgumentParser(
        prog="campaignctl",
        parents=[common],
        description="The campaign service from a shell.",
        epilog="exit codes: 0 ok, 1 error, 2 usage, 3 not found, 4 invalid argument or "
        "precondition, 5 unavailable",
        formatter_class=argparse.RawTextHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    adder = _Commands(sub, common)
    adder.create_and_list()
    adder.changes()
    adder.progress()
    return parser


def _read(path: str | None) -> bytes | None:
    return Path(path).read_bytes() if path else None


def connect(args: argparse.Namespace) -> CampaignClient:
    """A client for the connection options (and their environment fallbacks)."""
    target = getattr(args, "target", None) or os.environ.get("CAMPAIGNS_TARGET") or DEFAULT_TARGET
    token = getattr(args, "token", None) or os.environ.get("CAMPAIGNS_TOKEN") or None
    ca, cert, key = (getattr(args, name, None) for name in ("ca_cert", "client_cert", "client_key"))
    tls = bool(getattr(args, "tls", False) or ca or cert)
    return CampaignClient(
        target,
        insecure=not tls,
        root_certificates=_read(ca),
        certificate_chain=_read(cert),
        private_key=_read(key),
        token=token,
        timeout=getattr(args, "timeout", 10.0),
    )


def exit_code(error: CampaignClientError) -> int:
    for cls, code in EXIT_CODES:
        if isinstance(error, cls):
            return code
    return EXIT_ERROR


def _fail(message: str, code: int) -> int:
    print(f"campaignctl: {message}", file=sys.stderr)
    return code


def run(args: argparse.Namespace) -> int:
    args.json = getattr(args, "json", False)
    try:
        with connect(args) as client:
            handler: Command = args.handler
            return handler(client, args, render.console())
    except CampaignClientError as error:
        return _fail(str(error), exit_code(error))
    except (commands.UsageError, CsvError) as error:
        return _fail(str(error), EXIT_USAGE)
    except OSError as error:  # certificate files and the like
        return _fail(f"{error.filename or ''}: {error.strerror or error}", EXIT_USAGE)
    except KeyboardInterrupt:
        return _fail("interrupted", EXIT_INTERRUPTED)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
