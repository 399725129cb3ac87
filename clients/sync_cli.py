"""``befriend sync``: seed 000's two-way merge from the command line.

``befriend sync [--book phone] [--target device|network|both] [--source NAME] [--yes]``
previews a merge between a device book and the network book (or another book with
``--source``), prints the plan (counts, then up to ``--show`` matched contacts with their new
additions) and applies it after confirmation (``--yes`` skips the question), printing the
merge's name. ``befriend sync undo MERGE`` takes a merge back (only additions the user has
not modified go) and prints the counts.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

import typer
from rich import box
from rich.console import Console
from rich.table import Table

from befriend.v1 import common_pb2, sync_pb2

__all__ = ["sync_app"]

sync_app = typer.Typer(
    name="sync",
    help="Two-way merge of a device book with the network: preview, apply, undo.",
    invoke_without_command=True,
)


class Target(StrEnum):
    device = "device"
    network = "network"
    both = "both"


_TARGETS = {
    Target.device: sync_pb2.SYNC_TARGET_DEVICE_BOOK,
    Target.network: sync_pb2.SYNC_TARGET_NETWORK,
    Target.both: sync_pb2.SYNC_TARGET_BOTH,
}
_SIDES = {sync_pb2.MERGE_SIDE_DEVICE: "device", sync_pb2.MERGE_SIDE_NETWORK: "network"}


def _value(contact: common_pb2.Contact, field: str) -> str:
    """A short text of one field's added value(s)."""
    if field in ("mobile_numbers", "fixed_numbers"):
        return ", ".join(p.e164 or p.raw for p in getattr(contact, field))
    if field == "email_addresses":
        return ", ".join(e.raw for e in contact.email_addresses)
    if field == "im_ids":
        return ", ".join(f"{i.kind}:{i.id}" for i in contact.im_ids)
    if field == "homepage_urls":
        return ", ".join(contact.homepage_urls)
    if field == "organizations":
        return ", ".join(
            " / ".join(x for x in (o.company, o.job_title) if x) for o in contact.organizations
        )
    if field == "address":
        return contact.address.formatted or contact.address.locality
    if field == "birthday":
        b = contact.birthday
        return (
            f"{b.year:04d}-{b.month:02d}-{b.day:02d}" if b.year else f"--{b.month:02d}-{b.day:02d}"
        )
    return str(getattr(contact, field, ""))


def _name(item: sync_pb2.MergePlanItem) -> str:
    for c in (item.device_snapshot, item.network_snapshot):
        if c.display_name or c.given_name:
            return c.display_name or f"{c.given_name} {c.family_name}".strip()
    return item.device_contact or item.network_contact


def _console() -> Console:
    console = Console()
    return console if console.is_terminal else Console(width=200)


def print_plan(plan: sync_pb2.MergePlan, matched: list[sync_pb2.MergePlanItem], more: int) -> None:
    console = _console()
    counts = Table("", "count", box=box.SIMPLE_HEAD)
    counts.add_row("matched", str(plan.matched_count))
    counts.add_row("new additions", str(plan.field_addition_count))
    counts.add_row("unmatched device", str(plan.unmatched_device_count))
    counts.add_row("unmatched network", str(plan.unmatched_network_count))
    console.print(counts)
    if not matched:
        return
    items = Table("contact", "field", "added value", "to", box=box.SIMPLE_HEAD)
    for item in matched:
        label = _name(item)
        if not item.additions:
            items.add_row(label, "-", "(nothing new)", "")
        for addition in item.additions:
            items.add_row(
                label,
                addition.field,
                _value(addition.value, addition.field),
                _SIDES.get(addition.target_side, "-"),
            )
            label = ""
    console.print(items)
    if more:
        console.print(f"... and {more} more matched contacts")


@sync_app.callback()
def sync(
    ctx: typer.Context,
    book: Annotated[str, typer.Option("--book", help="The device address book.")] = "phone",
    target: Annotated[
        Target, typer.Option("--target", help="Which side receives new additions.")
    ] = Target.device,
    source: Annotated[
        str,
        typer.Option("--source", help="Merge with this address book instead of the network book."),
    ] = "",
    show: Annotated[int, typer.Option("--show", help="Matched contacts to list.")] = 20,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Apply without asking.")] = False,
) -> None:
    """Preview the two-way merge, then apply it after confirmation."""
    if ctx.invoked_subcommand is not None:
        return
    from . import cli

    state = cli._state(ctx)
    cli._require_token(state)
    with cli._reporting_errors(state), state.client() as client:
        plan = client.sync.preview_merge(
            book,
            network_source=(
                sync_pb2.NETWORK_SOURCE_ADDRESS_BOOK
                if source
                else sync_pb2.NETWORK_SOURCE_NETWORK_BOOK
            ),
            source_address_book=source,
            target=_TARGETS[target],
        )
        matched: list[sync_pb2.MergePlanItem] = []
        if show > 0 and plan.matched_count:
            for item in client.sync.iter_merge_plan_items(
                plan.name, kind=sync_pb2.MERGE_PLAN_ITEM_KIND_MATCHED, page_size=min(show, 1000)
            ):
                matched.append(item)
                if len(matched) >= show:
                    break
        typer.echo(f"merge plan {plan.name}")
        print_plan(plan, matched, max(0, plan.matched_count - len(matched)))
        if not plan.field_addition_count:
            typer.echo("nothing to add")
            return
        if not yes and not typer.confirm("Apply this merge?", default=False):
            typer.echo("not applied")
            raise typer.Exit(1)
        merge = client.sync.apply_merge(plan.name, plan.etag)
    typer.echo(
        f"applied {merge.name}: {merge.field_addition_count} additions to "
        f"{merge.contacts_updated_count} contacts"
    )
    typer.echo(f"undo with: befriend sync undo {merge.name.rsplit('/', 1)[-1]}")


@sync_app.command("undo")
def undo(
    ctx: typer.Context,
    merge: Annotated[str, typer.Argument(help="The merge (id or users/me/merges/ID).")],
) -> None:
    """Undo a merge: remove its new additions the user has not modified since."""
    from . import cli

    state = cli._state(ctx)
    cli._require_token(state)
    with cli._reporting_errors(state), state.client() as client:
        result = client.sync.undo_merge(merge)
    typer.echo(
        f"undid {result.merge.name}: removed {result.removed_field_count} additions, kept "
        f"{result.kept_modified_field_count} modified, removed "
        f"{result.removed_contact_count} added contacts"
    )
