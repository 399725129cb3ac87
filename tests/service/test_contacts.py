"""SyncService contacts through the SDK against a real server: CRUD with provenance, etags,
request_id replay, bad input that changes nothing, sync settings."""

from __future__ import annotations

import asyncio

import pytest

from befriend.clients import errors
from befriend.v1 import common_pb2, sync_pb2
from tests.conftest import RunningServer
from tests.service.conftest import Member, People, card, member

DEVICE = sync_pb2.FIELD_SOURCE_DEVICE
USER_EDIT = sync_pb2.FIELD_SOURCE_USER_EDIT


async def _ann(people: People, server: RunningServer) -> Member:
    ann = await member(people, server, "ann", "+8613900000001")
    await ann.upload(card("Bob", "13900000002"), card("Carol", "13900000003"))
    return ann


async def _contacts(m: Member) -> dict[str, sync_pb2.SyncedContact]:
    return {c.contact.name: c async for c in m.client.sync.iter_contacts(include_provenance=True)}


async def _feed(m: Member, cursor: str) -> list[sync_pb2.ContactChange]:
    return [c async for c in m.client.sync.iter_changes(cursor)]


async def test_uploaded_contacts_are_device_owned(
    people: People, running_server: RunningServer
) -> None:
    ann = await _ann(people, running_server)
    page = await ann.client.sync.list_contacts("phone", include_provenance=True)
    assert page.total_size == 2 and page.change_cursor and not page.next_page_token
    bob = next(c for c in page.contacts if c.contact.display_name == "Bob")
    assert bob.address_book == f"users/{ann.id}/addressBooks/phone"
    assert bob.contact.etag == 'W/"1"' and bob.contact.device_contact_id == "c0"
    sources = {p.field: (p.source, p.device_id) for p in bob.field_provenance}
    assert sources["display_name"] == (DEVICE, "d")
    assert sources["mobile_numbers[0]"] == (DEVICE, "d")
    got = await ann.client.sync.get_contact(bob.contact.name.rsplit("/", 1)[1])
    assert got == bob
    # Paging by id: every contact once, the same change cursor on every page.
    pages = await ann.client.sync.list_contacts(page_size=1)
    assert len(pages.contacts) == 1 and pages.next_page_token
    rest = await ann.client.sync.list_contacts(page_size=1, page_token=pages.next_page_token)
    assert rest.change_cursor == pages.change_cursor
    assert {pages.contacts[0].contact.name, rest.contacts[0].contact.name} == set(
        await _contacts(ann)
    )


async def test_create_update_delete_with_provenance(
    people: People, running_server: RunningServer
) -> None:
    ann = await _ann(people, running_server)
    bob_member = await member(people, running_server, "bob", "+8613900000009")
    cursor = (await ann.client.sync.list_contacts()).change_cursor
    made = await ann.client.sync.create_contact(
        "phone", card("Dan", "13900000009", emails=["dan@example.org"])
    )
    assert made.contact.device_contact_id.startswith("c-")
    assert {p.source for p in made.field_provenance} == {USER_EDIT}
    assert {p.field for p in made.field_provenance} >= {"display_name", "mobile_numbers[0]"}
    # buddy matching sees the created contact's number
    assert f"users/{bob_member.id}" in await ann.buddies()

    contacts = await _contacts(ann)
    bob = next(c for c in contacts.values() if c.contact.display_name == "Bob")
    edit = common_pb2.Contact(name=bob.contact.name, etag=bob.contact.etag, remark="friend")
    edited = await ann.client.sync.update_contact(edit, ["remark"])
    assert edited.contact.etag == 'W/"2"' and edited.contact.remark == "friend"
    assert edited.contact.display_name == "Bob"  # unmasked fields untouched
    prov = {p.field: p.source for p in edited.field_provenance}
    assert prov["remark"] == USER_EDIT and prov["display_name"] == DEVICE

    # a no-op edit changes nothing
    same = await ann.client.sync.update_contact(
        common_pb2.Contact(name=bob.contact.name, etag=edited.contact.etag, remark="friend"),
        ["remark"],
    )
    assert same.contact.etag == edited.contact.etag

    carol = next(c for c in contacts.values() if c.contact.display_name == "Carol")
    await ann.client.sync.delete_contact(carol.contact.name, etag=carol.contact.etag)
    with pytest.raises(errors.NotFound):
        await ann.client.sync.get_contact(carol.contact.name)

    changes = await _feed(ann, cursor)
    kinds = [(c.type, c.contact_name) for c in changes]
    assert kinds == [
        (sync_pb2.CONTACT_CHANGE_TYPE_CREATED, made.contact.name),
        (sync_pb2.CONTACT_CHANGE_TYPE_UPDATED, bob.contact.name),
        (sync_pb2.CONTACT_CHANGE_TYPE_DELETED, carol.contact.name),
    ]
    assert all(c.origin == sync_pb2.CONTACT_CHANGE_ORIGIN_USER_EDIT for c in changes)
    assert list(changes[1].changed_fields.paths) == ["remark"]
    assert changes[1].contact.contact.remark == "friend"
    books = {b.address_book_id: b for b in await _books(ann)}
    assert books["phone"].entry_count == 2


async def _books(m: Member) -> list[sync_pb2.AddressBook]:
    return [b async for b in m.client.sync.iter_address_books()]


async def test_two_devices_same_etag_second_aborted_nothing_lost(
    people: People, running_server: RunningServer
) -> None:
    ann = await _ann(people, running_server)
    other = Member(running_server, "ann-tablet")
    other.client.token = ann.client.token
    people["ann-tablet"] = other
    bob = next(c for c in (await _contacts(ann)).values() if c.contact.display_name == "Bob")
    name, etag = bob.contact.name, bob.contact.etag
    first = await ann.client.sync.update_contact(
        common_pb2.Contact(name=name, etag=etag, remark="from phone"), ["remark"]
    )
    with pytest.raises(errors.Aborted) as caught:
        await other.client.sync.update_contact(
            common_pb2.Contact(name=name, etag=etag, given_name="Robert"), ["given_name"]
        )
    assert caught.value.reason == "ETAG_MISMATCH"
    fresh = await other.client.sync.get_contact(name)
    assert fresh.contact.etag == first.contact.etag
    second = await other.client.sync.update_contact(
        common_pb2.Contact(name=name, etag=fresh.contact.etag, given_name="Robert"),
        ["given_name"],
    )
    assert second.contact.remark == "from phone" and second.contact.given_name == "Robert"
    assert second.contact.etag == 'W/"3"'


async def test_concurrent_updates_one_wins(people: People, running_server: RunningServer) -> None:
    ann = await _ann(people, running_server)
    bob = next(c for c in (await _contacts(ann)).values() if c.contact.display_name == "Bob")
    results = await asyncio.gather(
        *(
            ann.client.sync.update_contact(
                common_pb2.Contact(name=bob.contact.name, etag=bob.contact.etag, remark=f"r{i}"),
                ["remark"],
            )
            for i in range(4)
        ),
        return_exceptions=True,
    )
    ok = [r for r in results if isinstance(r, sync_pb2.SyncedContact)]
    assert len(ok) == 1
    assert all(isinstance(r, errors.Aborted) for r in results if r not in ok)
    assert (await ann.client.sync.get_contact(bob.contact.name)).contact.remark == ok[
        0
    ].contact.remark


async def test_request_id_replay(people: People, running_server: RunningServer) -> None:
    ann = await _ann(people, running_server)
    first = await ann.client.sync.create_contact("phone", card("Eve"), request_id="create-eve")
    again = await ann.client.sync.create_contact("phone", card("Eve"), request_id="create-eve")
    assert again == first
    assert (await ann.client.sync.list_contacts()).total_size == 3
    edit = common_pb2.Contact(name=first.contact.name, etag=first.contact.etag, remark="x")
    one = await ann.client.sync.update_contact(edit, ["remark"], request_id="edit-eve")
    two = await ann.client.sync.update_contact(edit, ["remark"], request_id="edit-eve")
    assert one == two and one.contact.etag == 'W/"2"'
    await ann.client.sync.delete_contact(first.contact.name, request_id="del-eve")
    await ann.client.sync.delete_contact(first.contact.name, request_id="del-eve")
    with pytest.raises(errors.InvalidArgument) as caught:
        await ann.client.sync.create_contact("phone", card("Fay"), request_id="create-eve")
    assert caught.value.reason == "REQUEST_ID_REUSED"


async def test_bad_input_changes_nothing(people: People, running_server: RunningServer) -> None:
    ann = await _ann(people, running_server)
    bob = next(c for c in (await _contacts(ann)).values() if c.contact.display_name == "Bob")
    cursor = (await ann.client.sync.list_contacts()).change_cursor
    name, etag = bob.contact.name, bob.contact.etag

    async def refused(
        error: type[errors.BefriendError],
        field: str | None,
        contact: common_pb2.Contact,
        mask: list[str],
    ) -> errors.BefriendError:
        with pytest.raises(error) as caught:
            await ann.client.sync.update_contact(contact, mask)
        if field is not None:
            assert [v.field for v in caught.value.field_violations] == [field]
        return caught.value

    await refused(
        errors.InvalidArgument, "update_mask", common_pb2.Contact(name=name, etag=etag), ["remark["]
    )
    await refused(
        errors.InvalidArgument, "update_mask", common_pb2.Contact(name=name, etag=etag), ["name"]
    )
    await refused(
        errors.InvalidArgument, "update_mask", common_pb2.Contact(name=name, etag=etag), []
    )
    stale = await refused(
        errors.Aborted, None, common_pb2.Contact(name=name, etag='W/"9"', remark="x"), ["remark"]
    )
    assert stale.reason == "ETAG_MISMATCH"
    await refused(
        errors.InvalidArgument,
        "contact.remark",
        common_pb2.Contact(name=name, etag=etag, remark="x" * 5000),
        ["remark"],
    )
    with pytest.raises(errors.NotFound):
        await ann.client.sync.create_contact("nope", card("Zed"))
    with pytest.raises(errors.NotFound):
        await ann.client.sync.update_contact(
            common_pb2.Contact(name="users/me/contacts/999999", etag=etag, remark="x"),
            ["remark"],
        )
    with pytest.raises(errors.InvalidArgument) as bad_cursor:
        await ann.client.sync.list_changes("!!not-a-cursor")
    assert [v.field for v in bad_cursor.value.field_violations] == ["cursor"]
    with pytest.raises(errors.InvalidArgument) as no_cursor:
        await ann.client.sync.list_changes("")
    assert [v.field for v in no_cursor.value.field_violations] == ["cursor"]
    # Another user's contact is not reachable.
    eve = await member(people, running_server, "eve", "+8613900000005")
    with pytest.raises(errors.PermissionDenied):
        await eve.client.sync.get_contact(name.replace("users/me", f"users/{ann.id}"))
    with pytest.raises(errors.NotFound):
        await eve.client.sync.get_contact(name.rsplit("/", 1)[1])

    assert (await ann.client.sync.get_contact(name)) == bob
    assert await _feed(ann, cursor) == []
    assert (await ann.client.sync.list_contacts()).total_size == 2


async def test_sync_settings(people: People, running_server: RunningServer) -> None:
    ann = await member(people, running_server, "ann", "+8613900000001")
    settings = await ann.client.sync.get_sync_settings()
    assert settings.name == f"users/{ann.id}/syncSettings"
    assert not settings.sync_pictures
    assert settings.default_network_source == sync_pb2.NETWORK_SOURCE_NETWORK_BOOK
    assert settings.default_target == sync_pb2.SYNC_TARGET_DEVICE_BOOK
    change = sync_pb2.SyncSettings(etag=settings.etag, sync_pictures=True)
    updated = await ann.client.sync.update_sync_settings(change, ["sync_pictures"])
    assert updated.sync_pictures and updated.etag != settings.etag
    assert updated.default_target == sync_pb2.SYNC_TARGET_DEVICE_BOOK
    with pytest.raises(errors.Aborted):
        await ann.client.sync.update_sync_settings(change, ["sync_pictures"])
    with pytest.raises(errors.InvalidArgument) as caught:
        await ann.client.sync.update_sync_settings(
            sync_pb2.SyncSettings(etag=updated.etag), ["colour"]
        )
    assert [v.field for v in caught.value.field_violations] == ["update_mask"]
    both = await ann.client.sync.update_sync_settings(
        sync_pb2.SyncSettings(etag=updated.etag, default_target=sync_pb2.SYNC_TARGET_BOTH),
        ["default_target"],
    )
    assert both.default_target == sync_pb2.SYNC_TARGET_BOTH and both.sync_pictures
    assert await ann.client.sync.get_sync_settings() == both
