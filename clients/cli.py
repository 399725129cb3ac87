"""The ``befriend`` command line.

Global options (before the command): ``--target`` (env ``BEFRIEND_TARGET``, default
``127.0.0.1:50051``), ``--token`` (env ``BEFRIEND_TOKEN``; otherwise the token file written by
``befriend register``: ``typer.get_app_dir("befriend")/token``, or env ``BEFRIEND_TOKEN_FILE``)
and ``--timeout`` (env ``BEFRIEND_TIMEOUT``).

Server-side failures print ``error: <CODE> <reason>: <message>`` and one indented line per
offending field to stderr and exit with status 1 — never a traceback.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, cast

import typer
from google.protobuf import json_format

from befriend.v1 import account_pb2, common_pb2

from .errors import BefriendError, Unavailable
from .sdk import DEFAULT_TARGET, Client

__all__ = ["app", "main", "token_file_path"]

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


@app.command()
def whoami(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print the user as JSON.")] = False,
) -> None:
    """Print the caller's user."""
    state = _state(ctx)
    if state.token is None:
        _err(
            "error: UNAUTHENTICATED: no token; pass --token, set BEFRIEND_TOKEN "
            "or run `befriend register`"
        )
        raise typer.Exit(1)
    with _reporting_errors(state), state.client() as client:
        response = client.account.get_me()
    _print_user(response.user, as_json)


def main() -> None:
    """Console-script entry point (``befriend``)."""
    app(prog_name="befriend")


if __name__ == "__main__":  # pragma: no cover
    main()
