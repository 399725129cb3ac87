"""Seed 000's two-way merge through the SDK: one test per Table 2 field, provenance, undo,
later changes flowing both ways, bad input."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from befriend.clients import errors
from befriend.v1 import common_pb2, sync_pb2
from tests.conftest import RunningServer
from tests.service.conftest import Member, People, card, member

A_PHONE, B_PHONE, B_PHONE2 = "+8613900000001", "+8613900000002", "+8613900000022"
DEVICE = sync_pb2.SYNC_TARGET_DEVICE_BOOK
NETWORK = sync_pb2.SYNC_TARGET_NETWORK
BOTH = sync_pb2.SYNC_TARGET_BOTH
MATCHED = sync_pb2.MERGE_PLAN_ITEM_KIND_MATCHED
NETWORK_MERGE = sync_pb2.FIELD_SOURCE_NETWORK_MERGE
USER_EDIT = sync_pb2.FIELD_SOURCE_USER_EDIT
DEVICE_SOURCE = sync_pb2.FIELD_SOURCE_DEVICE


async def set_profile(m: Member, profile: common_pb2.Profile) -> None:
    me = (await m.client.account.get_me()).user
    await m.client.account.update_profile(
        common_pb2.User(name=me.name, etag=me.etag, profile=profile), ["profile"]
    )


async def sync(m: Member, target: int = DEVICE) -> sync_pb2.Merge:
    """Preview, then apply everything matched."""
    plan = await m.client.sync.preview_merge("phone", target=target)
    return await m.client.sync.apply_merge(plan.name, plan.etag)


async def matched(m: Member, target: int = DEVICE) -> sync_pb2.MergePlanItem:
    plan = await m.client.sync.preview_merge("phone", target=target)
    items = [i async for i in m.client.sync.iter_merge_plan_items(plan.name, kind=MATCHED)]
    assert len(items) == 1
    return items[0]


async def device_card(m: Member) -> sync_pb2.SyncedContact:
    """Alice's device contact for Bob (the first of her phone book), as stored now."""
    page = await m.client.sync.list_contacts("phone", include_provenance=True)
    return page.contacts[0]


def sources(c: sync_pb2.SyncedContact) -> dict[str, int]:
    return {p.field: p.source for p in c.field_provenance}


async def buddies(
    people: People,
    server: RunningServer,
    a_card: common_pb2.Contact | None = None,
    *,
    b_phones: Sequence[str] = (B_PHONE,),
    b_emails: Sequence[str] = ("bob@example.com",),
    b_ims: Sequence[tuple[str, str]] = (),
) -> tuple[Member, Member]:
    """Alice and Bob, full buddies; Alice's book holds ``a_card`` for Bob."""
    a = await member(people, server, "Alice", A_PHONE)
    b = await member(people, server, "Bob Stone", *b_phones, emails=b_emails, ims=b_ims)
    await b.upload(card("Al", A_PHONE))
    await a.upload(a_card or card("Bobby", "139 0000 0002"))
    return a, b


async def test_name_goes_to_remark(people: People, running_server: RunningServer) -> None:
    a, _ = await buddies(people, running_server)
    item = await matched(a)
    assert item.match_basis == sync_pb2.MERGE_MATCH_BASIS_PHONE_NUMBER
    assert item.matched_identity.phone.e164 == B_PHONE
    assert "remark" in {x.field for x in item.additions}
    await sync(a)
    got = await device_card(a)
    assert (got.contact.display_name, got.contact.remark) == ("Bobby", "Bob Stone")
    assert sources(got)["remark"] == NETWORK_MERGE
    assert sources(got)["display_name"] == DEVICE_SOURCE


@pytest.mark.parametrize("setting", [False, True])
async def test_picture_per_user_setting(
    people: People, running_server: RunningServer, setting: bool
) -> None:
    a, b = await buddies(people, running_server)
    await set_profile(b, common_pb2.Profile(picture_uri="https://img.example/bob.png"))
    settings = await a.client.sync.get_sync_settings()
    await a.client.sync.update_sync_settings(
        sync_pb2.SyncSettings(etag=settings.etag, sync_pictures=setting), ["sync_pictures"]
    )
    plan = await a.client.sync.preview_merge("phone")
    assert plan.includes_pictures is setting
    await a.client.sync.apply_merge(plan.name, plan.etag)
    got = await device_card(a)
    assert got.contact.picture_uri == ("https://img.example/bob.png" if setting else "")


async def test_mobile_numbers_are_standardised(
    people: People, running_server: RunningServer
) -> None:
    a, _ = await buddies(people, running_server, b_phones=(B_PHONE, B_PHONE2))
    await sync(a)
    got = await device_card(a)
    # The national-format original stays; only the second number is new, in E.164.
    assert [(n.raw, n.e164) for n in got.contact.mobile_numbers][1:] == [(B_PHONE2, B_PHONE2)]
    assert len(got.contact.mobile_numbers) == 2
    assert sources(got)["mobile_numbers[1]"] == NETWORK_MERGE


async def test_email_variants_are_recognised(people: People, running_server: RunningServer) -> None:
    a, _ = await buddies(
        people, running_server, card("Bobby", "13900000002", emails=[" bob@EXAMPLE.com "])
    )
    item = await matched(a)
    assert not [x for x in item.additions if x.field.startswith("email_addresses")]
    a2, _ = people["Alice"], people["Bob Stone"]
    await a2.upload(card("Bobby", "13900000002"))
    await sync(a2)
    got = await device_card(a2)
    assert [e.normalized for e in got.contact.email_addresses] == ["bob@example.com"]


async def test_fixed_number_reaches_the_network_side(
    people: People, running_server: RunningServer
) -> None:
    bob = card("Bobby", "13900000002")
    bob.fixed_numbers.add(raw="010 1234 5678")
    a, _ = await buddies(people, running_server, bob)
    item = await matched(a, NETWORK)
    await sync(a, NETWORK)
    network = await a.client.sync.get_contact(item.network_contact)
    assert [n.e164 for n in network.contact.fixed_numbers] == ["+861012345678"]
    assert sources(network)["fixed_numbers[0]"] == NETWORK_MERGE
    assert sources(network)["display_name"] == sync_pb2.FIELD_SOURCE_NETWORK_PROFILE


async def test_homepage_address_birthday(people: People, running_server: RunningServer) -> None:
    a, b = await buddies(people, running_server)
    await set_profile(
        b,
        common_pb2.Profile(
            homepage_url="https://bob.example.com/",
            address=common_pb2.PostalAddress(formatted="1 Main St", locality="Shenzhen"),
            birthday=common_pb2.Date(year=1990, month=5, day=4),
        ),
    )
    await sync(a)
    got = (await device_card(a)).contact
    assert list(got.homepage_urls) == ["https://bob.example.com/"]
    assert (got.address.formatted, got.address.locality) == ("1 Main St", "Shenzhen")
    assert (got.birthday.year, got.birthday.month, got.birthday.day) == (1990, 5, 4)


async def test_most_recent_company_and_its_job_title(
    people: People, running_server: RunningServer
) -> None:
    a, b = await buddies(people, running_server)
    profile = common_pb2.Profile()
    profile.organizations.add(
        company="Old Co", job_title="Intern", start_date=common_pb2.Date(year=2015)
    )
    profile.organizations.add(company="New Co", job_title="Engineer", current=True)
    await set_profile(b, profile)
    await sync(a)
    got = (await device_card(a)).contact
    assert [(o.company, o.job_title) for o in got.organizations] == [("New Co", "Engineer")]


async def test_job_title_filled_into_the_known_company(
    people: People, running_server: RunningServer
) -> None:
    bob = card("Bobby", "13900000002")
    bob.organizations.add(company="new co")
    a, b = await buddies(people, running_server, bob)
    profile = common_pb2.Profile()
    profile.organizations.add(company="New Co", job_title="CTO", current=True)
    await set_profile(b, profile)
    merge = await sync(a)
    got = await device_card(a)
    assert [(o.company, o.job_title) for o in got.contact.organizations] == [("new co", "CTO")]
    assert sources(got)["organizations[0].job_title"] == NETWORK_MERGE
    await a.client.sync.undo_merge(merge.name)
    got = await device_card(a)
    assert [(o.company, o.job_title) for o in got.contact.organizations] == [("new co", "")]


async def test_im_ids(people: People, running_server: RunningServer) -> None:
    a, _ = await buddies(people, running_server, b_ims=[("qq", "12345")])
    await sync(a)
    got = (await device_card(a)).contact
    assert [(i.kind, i.id) for i in got.im_ids] == [("qq", "12345")]


async def test_undo_removes_only_unmodified_additions(
    people: People, running_server: RunningServer
) -> None:
    a, b = await buddies(people, running_server)
    await set_profile(b, common_pb2.Profile(homepage_url="https://bob.example.com/"))
    merge = await sync(a)
    before = await device_card(a)
    assert before.contact.remark == "Bob Stone"
    # The user edits one new addition: it becomes owned data.
    edit = common_pb2.Contact(name=before.contact.name, etag=before.contact.etag, remark="Bob S.")
    edited = await a.client.sync.update_contact(edit, ["remark"])
    assert sources(edited)["remark"] == USER_EDIT
    undone = await a.client.sync.undo_merge(merge.name)
    assert undone.kept_modified_field_count == 1
    assert undone.removed_field_count == merge.field_addition_count - 1
    got = await device_card(a)
    assert got.contact.remark == "Bob S."  # the edit survives
    assert got.contact.display_name == "Bobby"  # the original survives
    assert [n.raw for n in got.contact.mobile_numbers] == ["139 0000 0002"]
    assert not got.contact.homepage_urls and not got.contact.email_addresses
    assert NETWORK_MERGE not in sources(got).values()


async def test_buddy_profile_change_reaches_the_next_sync(
    people: People, running_server: RunningServer
) -> None:
    a, b = await buddies(people, running_server)
    profile = common_pb2.Profile()
    profile.organizations.add(company="New Co", job_title="Engineer", current=True)
    await set_profile(b, profile)
    await sync(a)
    profile.organizations[0].job_title = "CTO"
    await set_profile(b, profile)
    await sync(a)
    got = (await device_card(a)).contact
    assert [(o.company, o.job_title) for o in got.organizations] == [("New Co", "CTO")]


async def test_user_edit_is_not_overwritten_by_a_later_sync(
    people: People, running_server: RunningServer
) -> None:
    a, b = await buddies(people, running_server)
    profile = common_pb2.Profile()
    profile.organizations.add(company="New Co", job_title="Engineer", current=True)
    await set_profile(b, profile)
    await sync(a)
    got = await device_card(a)
    mine = common_pb2.Contact(name=got.contact.name, etag=got.contact.etag)
    mine.organizations.add(company="New Co", job_title="Boss")
    await a.client.sync.update_contact(mine, ["organizations"])
    profile.organizations[0].job_title = "CTO"
    await set_profile(b, profile)
    await sync(a)
    got = await device_card(a)
    assert [(o.company, o.job_title) for o in got.contact.organizations] == [("New Co", "Boss")]


async def test_device_change_reaches_the_server_copy(
    people: People, running_server: RunningServer
) -> None:
    bob = card("Bobby", "13900000002")
    bob.homepage_urls.append("https://old.example/")
    a, _ = await buddies(people, running_server, bob)
    item = await matched(a, NETWORK)
    await sync(a, NETWORK)
    network = await a.client.sync.get_contact(item.network_contact)
    assert list(network.contact.homepage_urls) == ["https://old.example/"]
    bob.homepage_urls[0] = "https://new.example/"
    await a.upload(bob)
    await sync(a, NETWORK)
    network = await a.client.sync.get_contact(item.network_contact)
    assert list(network.contact.homepage_urls) == ["https://new.example/"]


async def test_device_reupload_keeps_merge_additions(
    people: People, running_server: RunningServer
) -> None:
    """A device that has not received the additions yet re-uploads its old version."""
    bob = card("Bobby", "13900000002")
    a, _ = await buddies(people, running_server, bob)
    await sync(a)
    bob.display_name = "Bobby T."
    await a.upload(bob)
    got = await device_card(a)
    assert got.contact.display_name == "Bobby T." and got.contact.remark == "Bob Stone"
    assert sources(got)["remark"] == NETWORK_MERGE


async def test_unmatched_contacts_are_listed_and_can_be_added(
    people: People, running_server: RunningServer
) -> None:
    a = await member(people, running_server, "Alice", A_PHONE)
    b = await member(people, running_server, "Bob", B_PHONE)
    c = await member(people, running_server, "Carol", "+8613900000003")
    await b.upload(card("Al", A_PHONE))
    await c.upload(card("Al", A_PHONE))
    await a.upload(card("Bob", B_PHONE), card("Dan", "13900000004"))
    # Carol is a buddy through another of Alice's books, so her card has no counterpart.
    carol = card("Carol", "+8613900000003")
    await a.client.sync.upload_contacts(
        address_book_id="work",
        kind=sync_pb2.ADDRESS_BOOK_KIND_EMAIL_BOOK,
        device_id="laptop",
        entries=[sync_pb2.AddressBookEntry(entry_id="c", raw=b"c", contact=carol)],
    )
    plan = await a.client.sync.preview_merge("phone", target=BOTH)
    assert (plan.matched_count, plan.unmatched_device_count, plan.unmatched_network_count) == (
        1,
        1,
        1,
    )
    unmatched = [
        i async for i in a.client.sync.iter_merge_plan_items(plan.name) if i.kind != MATCHED
    ]
    names = {i.device_snapshot.display_name or i.network_snapshot.display_name for i in unmatched}
    assert names == {"Dan", "Carol"}
    # One item a page walks every kind once, in order: matched, device, network.
    paged = [
        (i.kind, i.item_id)
        async for i in a.client.sync.iter_merge_plan_items(plan.name, page_size=1)
    ]
    assert [k for k, _ in paged] == [
        MATCHED,
        sync_pb2.MERGE_PLAN_ITEM_KIND_UNMATCHED_DEVICE,
        sync_pb2.MERGE_PLAN_ITEM_KIND_UNMATCHED_NETWORK,
    ]
    assert len({i for _, i in paged}) == 3
    merge = await a.client.sync.apply_merge(
        plan.name, plan.etag, added_item_ids=[i.item_id for i in unmatched]
    )
    assert merge.contacts_created_count == 2
    page = await a.client.sync.list_contacts("phone")
    assert "Carol" in {x.contact.display_name for x in page.contacts}
    again = await a.client.sync.preview_merge("phone", target=BOTH)
    assert (again.unmatched_device_count, again.unmatched_network_count) == (0, 0)
    undone = await a.client.sync.undo_merge(merge.name)
    assert undone.removed_contact_count == 2


async def test_stale_plan_aborted_and_request_id_replayed(
    people: People, running_server: RunningServer
) -> None:
    a, _ = await buddies(people, running_server)
    plan = await a.client.sync.preview_merge("phone")
    first = await a.client.sync.apply_merge(plan.name, plan.etag, request_id="r1")
    again = await a.client.sync.apply_merge(plan.name, plan.etag, request_id="r1")
    assert again.name == first.name
    with pytest.raises(errors.Aborted):
        await a.client.sync.apply_merge(plan.name, plan.etag)
    plan = await a.client.sync.preview_merge("phone")
    with pytest.raises(errors.Aborted):
        await a.client.sync.apply_merge(plan.name, plan.etag + "x")


async def test_bad_input_changes_nothing(people: People, running_server: RunningServer) -> None:
    a, _ = await buddies(people, running_server)
    cursor = (await a.client.sync.list_contacts("phone")).change_cursor
    with pytest.raises(errors.InvalidArgument) as err:
        await a.client.sync.preview_merge("phone", network_source=7)
    assert [v.field for v in err.value.field_violations] == ["network_source"]
    with pytest.raises(errors.InvalidArgument) as err:
        await a.client.sync.preview_merge("phone", target=9)
    assert [v.field for v in err.value.field_violations] == ["target"]
    with pytest.raises(errors.NotFound):
        await a.client.sync.preview_merge("nosuchbook")
    with pytest.raises(errors.InvalidArgument):
        await a.client.sync.preview_merge(
            "phone", network_source=sync_pb2.NETWORK_SOURCE_ADDRESS_BOOK
        )
    plan = await a.client.sync.preview_merge("phone")
    with pytest.raises(errors.InvalidArgument) as err:
        await a.client.sync.apply_merge(plan.name, plan.etag, excluded_item_ids=["999"])
    assert [v.field for v in err.value.field_violations] == ["excluded_item_ids"]
    with pytest.raises(errors.NotFound):
        await a.client.sync.undo_merge("users/me/merges/nope")
    changes = await a.client.sync.list_changes(cursor)
    # Only the preview's network-book refresh (cards of buddies) moved the feed.
    assert {c.address_book for c in changes.changes} <= {f"users/{a.id}/addressBooks/network"}
