"""The ``befriend`` command line.

Global options (before the command): ``--target`` (env ``BEFRIEND_TARGET``, default
``127.0.0.1:50051``), ``--token`` (env ``BEFRIEND_TOKEN``; otherwise the token file written by
``befriend register``: ``typer.get_app_dir("befriend")/token``, or env ``BEFRIEND_TOKEN_FILE``)
and ``--timeout`` (env ``BEFRIEND_TIMEOUT``).

Server-side failures print ``error: <CODE> <reason>: <message>`` and one indented line per
offending field to stderr and exit with status 1 — never a traceback.

Address books: ``befriend contacts import FILE`` (vCard or CSV, see
:mod:`befriend.clients.contacts_io`), ``befriend contacts export``, ``befriend books``. The
device id they use defaults to a random id created once and kept beside the token file
(``device_id``); ``--device-id`` or env ``BEFRIEND_DEVICE_ID`` overrides it.

Buddies: ``befriend buddies list [--kind full|one-way|phonebook] [--json]``, ``befriend
buddies requests`` (pending one-way requests), ``befriend buddies accept|block USER_ID``,
``befriend buddies blocked``, ``befriend buddies unblock USER_ID`` and ``befriend buddies
common USER_ID`` (contacts you and a full buddy both hold).

Two-way sync: ``befriend sync [--book phone] [--target device|network|both] [--yes]`` and
``befriend sync undo MERGE`` (see :mod:`befriend.clients.sync_cli`).
"""

from __future__ import annotations

import importlib
import json
import os
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Annotated, cast

import typer
from google.protobuf import json_format
from google.protobuf.message import Message
from rich import box
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table

from befriend.v1 import account_pb2, common_pb2, friendship_pb2, sync_pb2

from . import contacts_io
from .errors import BefriendError, Unavailable
from .sdk import DEFAULT_TARGET, Client
from .sync_cli import sync_app

__all__ = ["app", "device_id_path", "main", "token_file_path"]

TOKEN_FILE_ENV = "BEFRIEND_TOKEN_FILE"

app = typer.Typer(
    name="befriend",
    help="befriend: serve the gRPC backend, or talk to one.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@dataclass
class _State:
    target: str
    token: str | None
    timeout: float

    def client(self) -> Client:
        return Client(self.target, token=self.token, timeout=self.timeout)


def token_file_path() -> Path:
    """Where ``register`` saves the token: ``$BEFRIEND_TOKEN_FILE`` or the app dir."""
    override = os.environ.get(TOKEN_FILE_ENV)
    if override:
        return Path(override).expanduser()
    return Path(typer.get_app_dir("befriend")) / "token"


def device_id_path() -> Path:
    """Where the CLI keeps this machine's device id: beside the token file."""
    return token_file_path().parent / "device_id"


def _device_id() -> str:
    """This machine's device id, created (``cli-<uuid4 hex>``) on first use."""
    path = device_id_path()
    try:
        existing = path.read_text(encoding="utf-8").strip()
    except (FileNotFoundError, NotADirectoryError):
        existing = ""
    if existing:
        return existing
    device_id = f"cli-{uuid.uuid4().hex}"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(device_id + "\n", encoding="utf-8")
    return device_id


def _read_token_file() -> str | None:
    try:
        token = token_file_path().read_text(encoding="utf-8").strip()
    except (FileNotFoundError, NotADirectoryError):
        return None
    return token or None


def _save_token(token: str) -> Path:
    path = token_file_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(token + "\n")
    path.chmod(0o600)  # O_CREAT's mode does not apply to an existing file
    return path


def _err(text: str) -> None:
    typer.echo(text, err=True)


def _print_error(error: BefriendError, target: str) -> None:
    head = error.code.name if error.reason is None else f"{error.code.name} {error.reason}"
    _err(f"error: {head}: {error.message}")
    for violation in error.field_violations:
        _err(f"  {violation.field}: {violation.description}")
    if isinstance(error, Unavailable) and error.reason is None:
        _err(f"  (is a befriend server running at {target}?)")


@contextmanager
def _reporting_errors(state: _State) -> Iterator[None]:
    try:
        yield
    except BefriendError as error:
        _print_error(error, state.target)
        raise typer.Exit(1) from None


def _state(ctx: typer.Context) -> _State:
    return cast(_State, ctx.obj)


def _print_user(user: common_pb2.User, as_json: bool) -> None:
    if as_json:
        typer.echo(json_format.MessageToJson(user))
        return
    typer.echo(f"{user.name}  {user.display_name}")
    typer.echo(f"  id: {user.user_id}")
    for phone in user.phone_numbers:
        shown = phone.e164 or f"{phone.raw} (not normalised)"
        typer.echo(f"  phone: {shown}")
    for email in user.email_addresses:
        typer.echo(f"  email: {email.normalized or email.raw}")
    for im in user.im_ids:
        typer.echo(f"  im: {im.kind}:{im.id}")
    if user.region_code:
        typer.echo(f"  region: {user.region_code}")
    if user.time_zone:
        typer.echo(f"  time zone: {user.time_zone}")


@app.callback()
def _global_options(
    ctx: typer.Context,
    target: Annotated[
        str, typer.Option(envvar="BEFRIEND_TARGET", help="Server address host:port.")
    ] = DEFAULT_TARGET,
    token: Annotated[
        str | None,
        typer.Option(
            envvar="BEFRIEND_TOKEN",
            help="Bearer token (default: the token file saved by `befriend register`).",
            show_default=False,
        ),
    ] = None,
    timeout: Annotated[
        float, typer.Option(envvar="BEFRIEND_TIMEOUT", help="Deadline per RPC, in seconds.")
    ] = 10.0,
) -> None:
    ctx.obj = _State(target=target, token=token or _read_token_file(), timeout=timeout)


_PASSTHROUGH = {"allow_extra_args": True, "ignore_unknown_options": True}


def _server_entry(name: str) -> Callable[[list[str]], int]:
    # Imported lazily: the clients package never imports the server at import time.
    module = importlib.import_module("befriend.server.main")
    return cast(Callable[[list[str]], int], getattr(module, name))


@app.command(context_settings=_PASSTHROUGH, add_help_option=False)
def serve(ctx: typer.Context) -> None:
    """Run the gRPC server; every argument goes to the server (try `befriend serve --help`)."""
    raise typer.Exit(_server_entry("serve_main")(list(ctx.args)))


@app.command(context_settings=_PASSTHROUGH, add_help_option=False)
def migrate(ctx: typer.Context) -> None:
    """Migrate the database; every argument goes to the migrator."""
    raise typer.Exit(_server_entry("migrate_main")(list(ctx.args)))


@app.command()
def health(
    ctx: typer.Context,
    service: Annotated[
        str, typer.Option(help='Service to check, e.g. "befriend.v1.AccountService".')
    ] = "",
) -> None:
    """Print the server's health status; exit 0 only when SERVING."""
    state = _state(ctx)
    with _reporting_errors(state), state.client() as client:
        status = client.health(service)
    typer.echo(status)
    if status != "SERVING":
        raise typer.Exit(1)


@app.command()
def register(
    ctx: typer.Context,
    name: Annotated[str, typer.Option("--name", help="Display name.")],
    phone: Annotated[
        list[str] | None, typer.Option("--phone", help="Phone number (repeatable).")
    ] = None,
    email: Annotated[
        list[str] | None, typer.Option("--email", help="E-mail address (repeatable).")
    ] = None,
    region: Annotated[str, typer.Option("--region", help="Home region (CLDR code), e.g. CN.")] = "",
    timezone: Annotated[
        str, typer.Option("--timezone", help="IANA time zone, e.g. Asia/Shanghai.")
    ] = "",
    device_id: Annotated[
        str | None, typer.Option("--device-id", help="Device the registration comes from.")
    ] = None,
    request_id: Annotated[
        str | None, typer.Option("--request-id", help="Idempotency key (default: a uuid4).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the user as JSON.")] = False,
) -> None:
    """Create an account, print it and save its token to the token file (mode 600)."""
    state = _state(ctx)
    device = account_pb2.Device(device_id=device_id) if device_id else None
    with _reporting_errors(state), Client(state.target, timeout=state.timeout) as client:
        response = client.account.register(
            display_name=name,
            phone_numbers=phone or (),
            email_addresses=email or (),
            region_code=region,
            time_zone=timezone,
            device=device,
            request_id=request_id,
        )
    _print_user(response.user, as_json)
    if response.access_token:
        path = _save_token(response.access_token)
        _err(f"token saved to {path}")


def _require_token(state: _State) -> None:
    if state.token is None:
        _err(
            "error: UNAUTHENTICATED: no token; pass --token, set BEFRIEND_TOKEN "
            "or run `befriend register`"
        )
        raise typer.Exit(1)


@app.command()
def whoami(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print the user as JSON.")] = False,
) -> None:
    """Print the caller's user."""
    state = _state(ctx)
    _require_token(state)
    with _reporting_errors(state), state.client() as client:
        response = client.account.get_me()
    _print_user(response.user, as_json)


# --------------------------------------------------------------------------------------
# Address books
# --------------------------------------------------------------------------------------

contacts_app = typer.Typer(
    name="contacts", help="Import and export address books.", no_args_is_help=True
)
app.add_typer(contacts_app)


class BookKind(StrEnum):
    phone = "phone"
    email = "email"
    im = "im"


_KINDS = {
    BookKind.phone: sync_pb2.ADDRESS_BOOK_KIND_DEVICE_PHONE_BOOK,
    BookKind.email: sync_pb2.ADDRESS_BOOK_KIND_EMAIL_BOOK,
    BookKind.im: sync_pb2.ADDRESS_BOOK_KIND_IM_BOOK,
}


class ExportFormat(StrEnum):
    vcf = "vcf"
    csv = "csv"


BookOption = Annotated[str, typer.Option("--book", help="Address book id, [a-z0-9-], e.g. phone.")]
DeviceOption = Annotated[
    str | None,
    typer.Option(
        "--device-id",
        envvar="BEFRIEND_DEVICE_ID",
        help="Device id (default: this machine's id, kept beside the token file).",
        show_default=False,
    ),
]


def _describe_issue(issue: contacts_io.ParseIssue, fmt: str) -> str:
    what = "vCard" if fmt == "vcf" else "row"
    where = (
        f"{what} #{issue.index + 1} (line {issue.line})"
        if issue.index is not None
        else (f"line {issue.line}")
    )
    return f"warning: skipped {where}: {issue.reason}"


def _reason_name(reason: int) -> str:
    try:
        return common_pb2.ErrorReason.Name(cast(common_pb2.ErrorReason.ValueType, reason))
    except ValueError:
        return str(reason)


@contacts_app.command("import")
def import_contacts(
    ctx: typer.Context,
    file: Annotated[
        Path,
        typer.Argument(
            exists=True, dir_okay=False, readable=True, help="A .vcf/.vcard or .csv file."
        ),
    ],
    book: BookOption = "phone",
    device_id: DeviceOption = None,
    kind: Annotated[BookKind, typer.Option("--kind", help="Kind of address book.")] = (
        BookKind.phone
    ),
    full: Annotated[
        bool,
        typer.Option(
            "--full",
            help="The file is the whole book: stored entries not in it are removed.",
        ),
    ] = False,
) -> None:
    """Upload the contacts of a vCard or CSV file to an address book (resumable)."""
    state = _state(ctx)
    try:
        fmt = contacts_io.format_for_path(file)
    except ValueError as error:
        _err(f"error: {error}")
        raise typer.Exit(2) from None
    _require_token(state)
    parsed = contacts_io.read_contacts(file)
    for issue in parsed.issues:
        _err(_describe_issue(issue, fmt))
    if parsed.ignored_columns:
        _err("warning: ignored columns: " + ", ".join(parsed.ignored_columns))
    device = device_id or _device_id()
    console = Console(stderr=True)
    progress = Progress(
        TextColumn("uploading"),
        BarColumn(),
        MofNCompleteColumn(),
        console=console,
        transient=True,
        disable=not console.is_terminal,
    )
    task = progress.add_task("upload", total=len(parsed.entries))

    def advance(done: int, total: int) -> None:
        progress.update(task, completed=done, total=total)

    with _reporting_errors(state), state.client() as client, progress:
        client.account.register_device(device, platform="befriend-cli")
        result = client.sync.upload_contacts(
            address_book_id=book,
            kind=_KINDS[kind],
            device_id=device,
            entries=parsed.entries,
            mode=sync_pb2.UPLOAD_MODE_FULL_SNAPSHOT if full else sync_pb2.UPLOAD_MODE_INCREMENTAL,
            progress=advance,
        )
    typer.echo(
        f"stored {result.acknowledged_entry_count} of {len(parsed.entries)} entries "
        f"in {result.address_book or book}"
    )
    typer.echo(f"rejected {len(result.rejections)}")
    for rejection in result.rejections:
        typer.echo(
            f"  {rejection.entry_id or '(no id)'} (chunk {rejection.sequence_number} "
            f"#{rejection.entry_index}) {rejection.field}: {_reason_name(rejection.reason)} "
            f"{rejection.description}"
        )
    if parsed.issues:
        typer.echo(f"skipped {len(parsed.issues)} unreadable record(s) of {file.name}")


@contacts_app.command("export")
def export_contacts(
    ctx: typer.Context,
    book: BookOption = "phone",
    fmt: Annotated[
        ExportFormat | None,
        typer.Option("--format", help="vcf (original vCards) or csv (default: from -o, else vcf)."),
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option("-o", "--output", dir_okay=False, help="File to write (default stdout)."),
    ] = None,
    device_id: DeviceOption = None,
) -> None:
    """Download an address book (every entry, byte for byte as uploaded) as vCard or CSV."""
    state = _state(ctx)
    _require_token(state)
    chosen = fmt
    if chosen is None:
        chosen = (
            ExportFormat.csv
            if output is not None and output.suffix.lower() == ".csv"
            else ExportFormat.vcf
        )
    with _reporting_errors(state), state.client() as client:
        entries = client.sync.restore_contacts(book, device_id=device_id or _device_id())
    data = (
        contacts_io.write_csv(entries)
        if chosen is ExportFormat.csv
        else contacts_io.write_vcards(entries)
    )
    if output is None:
        typer.echo(data, nl=False)
    else:
        output.write_bytes(data)
    _err(f"exported {len(entries)} entries from {book}" + (f" to {output}" if output else ""))


@app.command()
def books(ctx: typer.Context) -> None:
    """List the caller's address books, most recently updated first."""
    state = _state(ctx)
    _require_token(state)
    with _reporting_errors(state), state.client() as client:
        found = list(client.sync.iter_address_books())
    for book in found:
        kind = sync_pb2.AddressBookKind.Name(book.kind).removeprefix("ADDRESS_BOOK_KIND_")
        updated = book.update_time.ToJsonString() if book.HasField("update_time") else "-"
        typer.echo(
            f"{book.address_book_id}  {kind.lower()}  {book.entry_count} entries  "
            f"device {book.device_id or '-'}  updated {updated}"
        )
    if not found:
        _err("no address books")


# --------------------------------------------------------------------------------------
# Buddies
# --------------------------------------------------------------------------------------

buddies_app = typer.Typer(
    name="buddies",
    help="Buddy list, one-way requests, blocks and common contacts.",
    no_args_is_help=True,
)
app.add_typer(buddies_app)


class BuddyKindChoice(StrEnum):
    full = "full"
    one_way = "one-way"
    phonebook = "phonebook"


_BUDDY_KINDS = {
    BuddyKindChoice.full: friendship_pb2.BUDDY_KIND_FULL,
    BuddyKindChoice.one_way: friendship_pb2.BUDDY_KIND_ONE_WAY,
    BuddyKindChoice.phonebook: friendship_pb2.BUDDY_KIND_PHONEBOOK,
}
_KIND_LABELS = {value: choice.value for choice, value in _BUDDY_KINDS.items()}
_MATCH_LABELS = {
    friendship_pb2.BUDDY_MATCH_KEY_EXACT_E164: "number",
    friendship_pb2.BUDDY_MATCH_KEY_EMAIL: "e-mail",
    friendship_pb2.BUDDY_MATCH_KEY_IM_ID: "IM id",
    friendship_pb2.BUDDY_MATCH_KEY_WEAK_SUFFIX: "number suffix",
}

JsonOption = Annotated[bool, typer.Option("--json", help="Print a JSON array.")]


def _matched_by(buddy: friendship_pb2.Buddy) -> str:
    if buddy.kind == friendship_pb2.BUDDY_KIND_PHONEBOOK:
        return "-"  # not a match (friendship.proto: match is unset for phonebook buddies)
    label = _MATCH_LABELS.get(buddy.match.key, "-")
    if buddy.match.key == friendship_pb2.BUDDY_MATCH_KEY_WEAK_SUFFIX and (
        buddy.match.weak_suffix_digits
    ):
        label += f" ({buddy.match.weak_suffix_digits} digits)"
    return label


def _print_json(messages: Iterable[Message]) -> None:
    typer.echo(json.dumps([json_format.MessageToDict(m) for m in messages], indent=2))


def _stdout_console() -> Console:
    # Not a terminal (a pipe, a test): wide enough that rows are never wrapped.
    console = Console()
    return console if console.is_terminal else Console(width=200)


@buddies_app.command("list")
def list_buddies(
    ctx: typer.Context,
    kind: Annotated[
        BuddyKindChoice | None,
        typer.Option("--kind", help="Only buddies of this kind (default: every kind)."),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """List the caller's buddies: name, kind, what matched and the phonebook name."""
    state = _state(ctx)
    _require_token(state)
    wanted = _BUDDY_KINDS[kind] if kind is not None else 0
    with _reporting_errors(state), state.client() as client:
        found = list(client.friendship.iter_buddies(kind=wanted))
    if as_json:
        _print_json(found)
        return
    if not found:
        _err("no buddies")
        return
    table = Table("name", "kind", "matched by", "phonebook name", box=box.SIMPLE_HEAD)
    for buddy in found:
        table.add_row(
            buddy.display_name or "-",
            _KIND_LABELS.get(buddy.kind, str(buddy.kind)),
            _matched_by(buddy),
            buddy.phonebook_entry.display_name or "-",
        )
    _stdout_console().print(table)


@buddies_app.command("requests")
def list_requests(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """List pending one-way requests: members who hold your number but not vice versa."""
    state = _state(ctx)
    _require_token(state)
    with _reporting_errors(state), state.client() as client:
        found = list(client.friendship.iter_one_way_requests())
    if as_json:
        _print_json(found)
        return
    if not found:
        _err("no pending one-way requests")
        return
    table = Table("user id", "name", "since", box=box.SIMPLE_HEAD)
    for request in found:
        since = request.create_time.ToJsonString() if request.HasField("create_time") else "-"
        table.add_row(
            request.requester.removeprefix("users/"),
            request.requester_display_name or "-",
            since,
        )
    _stdout_console().print(table)
    _err("answer with `befriend buddies accept USER_ID` or `befriend buddies block USER_ID`")


UserIdArgument = Annotated[
    str, typer.Argument(help="The requester's user id (or users/{id}, or the request's name).")
]
RequestIdOption = Annotated[
    str | None, typer.Option("--request-id", help="Idempotency key (default: a uuid4).")
]


@buddies_app.command("accept")
def accept_request(
    ctx: typer.Context, user_id: UserIdArgument, request_id: RequestIdOption = None
) -> None:
    """Accept a one-way request: the two of you become full buddies and share presence."""
    state = _state(ctx)
    _require_token(state)
    with _reporting_errors(state), state.client() as client:
        answer = client.friendship.accept_one_way_request(user_id, request_id)
    who = answer.one_way_request.requester or answer.buddy.user
    typer.echo(f"accepted {who}: now full buddies")


@buddies_app.command("block")
def block_request(
    ctx: typer.Context, user_id: UserIdArgument, request_id: RequestIdOption = None
) -> None:
    """Block the member behind a one-way request: you leave their buddy list."""
    state = _state(ctx)
    _require_token(state)
    with _reporting_errors(state), state.client() as client:
        answer = client.friendship.block_one_way_request(user_id, request_id)
    who = answer.one_way_request.requester or answer.blocked_user.user
    typer.echo(f"blocked {who}")


@buddies_app.command("blocked")
def list_blocked(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """List the members you blocked, most recent first."""
    state = _state(ctx)
    _require_token(state)
    with _reporting_errors(state), state.client() as client:
        found = list(client.friendship.iter_blocked_users())
    if as_json:
        _print_json(found)
        return
    if not found:
        _err("no blocked members")
        return
    table = Table("user id", "name", "blocked", box=box.SIMPLE_HEAD)
    for blocked in found:
        since = blocked.block_time.ToJsonString() if blocked.HasField("block_time") else "-"
        table.add_row(blocked.user.removeprefix("users/"), blocked.display_name or "-", since)
    _stdout_console().print(table)
    _err("lift a block with `befriend buddies unblock USER_ID`")


@buddies_app.command("unblock")
def unblock_user(
    ctx: typer.Context,
    user_id: Annotated[str, typer.Argument(help="The blocked member's user id (or users/{id}).")],
    request_id: RequestIdOption = None,
) -> None:
    """Lift a block: matching between the two of you resumes at once."""
    state = _state(ctx)
    _require_token(state)
    with _reporting_errors(state), state.client() as client:
        client.friendship.unblock_user(user_id, request_id)
    typer.echo(f"unblocked users/{user_id.rsplit('/', 1)[-1]}")


@buddies_app.command("common")
def common_contacts(
    ctx: typer.Context,
    user_id: Annotated[str, typer.Argument(help="A full buddy's user id (or users/{id}).")],
    as_json: JsonOption = False,
) -> None:
    """List the contacts you and a full buddy both hold (from your own book)."""
    state = _state(ctx)
    _require_token(state)
    with _reporting_errors(state), state.client() as client:
        found = list(client.friendship.iter_common_contacts(user_id))
    if as_json:
        _print_json(found)
        return
    if not found:
        _err("no common contacts")
        return
    table = Table("name", "number", "member", box=box.SIMPLE_HEAD)
    for common in found:
        table.add_row(
            common.display_name or "-",
            common.phone_number.raw or common.phone_number.e164,
            common.user.removeprefix("users/") or "-",
        )
    _stdout_console().print(table)


# --------------------------------------------------------------------------------------
# Two-way sync (befriend.clients.sync_cli)
# --------------------------------------------------------------------------------------

app.add_typer(sync_app)


def main() -> None:
    """Console-script entry point (``befriend``)."""
    app(prog_name="befriend")


if __name__ == "__main__":  # pragma: no cover
    main()
