"""Seed 000's two-way merge through the SDK: Table 2 fields, provenance, undo."""

from __future__ import annotations

import pytest

from befriend.v1 import account_pb2, account_pb2_grpc, common_pb2, sync_pb2
from tests.conftest import RunningServer
from tests.service.conftest import Member, People, card, member

A_PHONE, B_PHONE = "+8613900000001", "+8613900000002"
DEVICE = sync_pb2.SYNC_TARGET_DEVICE_BOOK
NETWORK = sync_pb2.SYNC_TARGET_NETWORK
BOTH = sync_pb2.SYNC_TARGET_BOTH


async def set_profile(m: Member, profile: common_pb2.Profile, *paths: str) -> None:
    accounts = account_pb2_grpc.AccountServiceStub(m.client.channel)
    me = await accounts.GetMe(account_pb2.GetMeRequest(), metadata=m.md)
    await accounts.UpdateProfile(
        account_pb2.UpdateProfileRequest(
            user=account_pb2.User(name=me.user.name, etag=me.user.etag, profile=profile)
            if hasattr(account_pb2, "User")
            else common_pb2.User(name=me.user.name, etag=me.user.etag, profile=profile),
            update_mask={"paths": list(paths) or ["profile"]},
        ),
        metadata=m.md,
    )


async def preview(m: Member, target: int = DEVICE) -> sync_pb2.MergePlan:
    resp = await m.sync.PreviewMerge(
        sync_pb2.PreviewMergeRequest(
            device_address_book="users/me/addressBooks/phone",
            network_source=sync_pb2.NETWORK_SOURCE_NETWORK_BOOK,
            target=target,  # type: ignore[arg-type]
        ),
        metadata=m.md,
    )
    return resp.merge_plan


async def items(m: Member, plan: sync_pb2.MergePlan, kind: int = 0) -> list[sync_pb2.MergePlanItem]:
    out: list[sync_pb2.MergePlanItem] = []
    token = ""
    while True:
        resp = await m.sync.ListMergePlanItems(
            sync_pb2.ListMergePlanItemsRequest(
                parent=plan.name,
                kind=kind,
                page_size=2,
                page_token=token,  # type: ignore[arg-type]
            ),
            metadata=m.md,
        )
        out += resp.items
        token = resp.next_page_token
        if not token:
            return out


async def apply(m: Member, plan: sync_pb2.MergePlan, **kw: object) -> sync_pb2.Merge:
    resp = await m.sync.ApplyMerge(
        sync_pb2.ApplyMergeRequest(merge_plan=plan.name, etag=plan.etag, **kw),  # type: ignore[arg-type]
        metadata=m.md,
    )
    return resp.merge


async def device_contact(m: Member) -> common_pb2.Contact:
    """The (only) matched device contact as stored now."""
    plan = await preview(m)
    matched = await items(m, plan, sync_pb2.MERGE_PLAN_ITEM_KIND_MATCHED)
    assert len(matched) == 1
    return matched[0].device_snapshot


@pytest.fixture
async def pair(people: People, running_server: RunningServer) -> tuple[Member, Member]:
    a = await member(people, running_server, "Alice", A_PHONE)
    b = await member(people, running_server, "Bob Stone", B_PHONE, emails=["bob@example.com"])
    await b.upload(card("Al", A_PHONE))
    await a.upload(card("Bobby", "139 0000 0002"))
    return a, b


async def test_name_becomes_remark_and_undo_removes_it(pair: tuple[Member, Member]) -> None:
    a, _ = pair
    plan = await preview(a)
    assert plan.matched_count == 1
    [item] = await items(a, plan, sync_pb2.MERGE_PLAN_ITEM_KIND_MATCHED)
    assert item.match_basis == sync_pb2.MERGE_MATCH_BASIS_PHONE_NUMBER
    assert item.matched_identity.phone.e164 == B_PHONE
    fields = {x.field for x in item.additions}
    assert "remark" in fields
    merge = await apply(a, plan)
    assert merge.field_addition_count >= 2
    got = await device_contact(a)
    assert got.display_name == "Bobby"
    assert got.remark == "Bob Stone"
    assert [e.normalized or e.raw for e in got.email_addresses] == ["bob@example.com"]
    undone = await a.sync.UndoMerge(sync_pb2.UndoMergeRequest(merge=merge.name), metadata=a.md)
    assert undone.removed_field_count == merge.field_addition_count
    assert undone.merge.HasField("undo_time")
    got = await device_contact(a)
    assert got.remark == "" and not got.email_addresses and got.display_name == "Bobby"


async def test_profile_fields_flow_and_follow_changes(pair: tuple[Member, Member]) -> None:
    a, b = pair
    profile = common_pb2.Profile(
        homepage_url="https://bob.example.com/",
        address=common_pb2.PostalAddress(formatted="1 Main St"),
        birthday=common_pb2.Date(year=1990, month=5, day=4),
    )
    profile.organizations.add(company="Old Co", job_title="Intern")
    profile.organizations.add(company="New Co", job_title="Engineer", current=True)
    await set_profile(b, profile)
    await apply(a, await preview(a))
    got = await device_contact(a)
    assert list(got.homepage_urls) == ["https://bob.example.com/"]
    assert got.address.formatted == "1 Main St"
    assert (got.birthday.year, got.birthday.month, got.birthday.day) == (1990, 5, 4)
    assert [(o.company, o.job_title) for o in got.organizations] == [("New Co", "Engineer")]
    # A buddy's new job title reaches the next sync.
    profile.organizations[1].job_title = "CTO"
    await set_profile(b, profile)
    plan = await preview(a)
    assert plan.field_addition_count >= 1
    await apply(a, plan)
    got = await device_contact(a)
    assert [(o.company, o.job_title) for o in got.organizations] == [("New Co", "CTO")]


async def test_stale_plan_is_aborted_and_replay_is_idempotent(pair: tuple[Member, Member]) -> None:
    a, _ = pair
    plan = await preview(a)
    first = await a.sync.ApplyMerge(
        sync_pb2.ApplyMergeRequest(merge_plan=plan.name, etag=plan.etag, request_id="r1"),
        metadata=a.md,
    )
    again = await a.sync.ApplyMerge(
        sync_pb2.ApplyMergeRequest(merge_plan=plan.name, etag=plan.etag, request_id="r1"),
        metadata=a.md,
    )
    assert again.merge.name == first.merge.name
    import grpc

    with pytest.raises(grpc.aio.AioRpcError) as err:
        await apply(a, plan)
    assert err.value.code() == grpc.StatusCode.ABORTED


async def test_unmatched_network_contact_added_to_device(
    people: People, running_server: RunningServer
) -> None:
    a = await member(people, running_server, "Alice", A_PHONE)
    b = await member(people, running_server, "Bob", B_PHONE)
    await b.upload(card("Al", A_PHONE))  # one-way: Bob -> Alice... Alice sees Bob? no
    await a.upload(card("Bob", B_PHONE), card("Carol", "13900000003"))
    plan = await preview(a, BOTH)
    assert plan.unmatched_device_count == 1
    unmatched = await items(a, plan, sync_pb2.MERGE_PLAN_ITEM_KIND_UNMATCHED_DEVICE)
    assert unmatched[0].device_snapshot.display_name == "Carol"
    merge = await apply(a, plan, added_item_ids=[unmatched[0].item_id])
    assert merge.contacts_created_count == 1
    plan2 = await preview(a, BOTH)
    assert plan2.unmatched_device_count == 0
    undone = await a.sync.UndoMerge(sync_pb2.UndoMergeRequest(merge=merge.name), metadata=a.md)
    assert undone.removed_contact_count == 1
