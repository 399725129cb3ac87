"""Unit tests of befriend.core.merge: seed 000 Table 2 field by field, modification, deletion,
re-sync and device re-uploads."""

from __future__ import annotations

from typing import Any

import pytest

from befriend.core.merge import (
    EDITABLE_FIELDS,
    Addition,
    Op,
    Prov,
    Source,
    UndoCounts,
    apply,
    changed_fields,
    edit,
    is_empty,
    keys,
    plan,
    provs_from_json,
    provs_to_json,
    replace_owned,
    slots,
    undo,
)

DEVICE = Prov(Source.DEVICE, device_id="phone-1", time=1)
M = Prov(Source.NETWORK_MERGE, merge="m1", time=10)


def merge(
    source: dict[str, Any],
    target: dict[str, Any],
    provs: dict[str, Prov] | None = None,
    *,
    include_picture: bool = False,
    new_contact: bool = False,
    merge_id: str = "m1",
) -> tuple[dict[str, Any], dict[str, Prov], list[Addition]]:
    adds = plan(
        source,
        target,
        provs,
        region="CN",
        include_picture=include_picture,
        new_contact=new_contact,
    )
    doc, out = apply(target, provs, adds, merge=merge_id, time=10, region="CN")
    assert plan(source, doc, out, region="CN", include_picture=include_picture) == []
    return doc, out, adds


# --- Table 2, field by field -----------------------------------------------------------------


def test_name_goes_to_remark_when_empty() -> None:
    doc, provs, adds = merge({"display_name": "Li Lei"}, {"display_name": "Lei"})
    assert doc == {"display_name": "Lei", "remark": "Li Lei"}
    assert provs == {"remark": M}
    assert [(a.field, a.op) for a in adds] == [("remark", Op.ADD)]


def test_given_and_family_name_make_the_remark_and_an_existing_remark_stays() -> None:
    doc, _, _ = merge({"given_name": "Lei", "family_name": "Li"}, {"display_name": "x"})
    assert doc["remark"] == "Lei Li"
    doc, _, adds = merge({"display_name": "Li Lei"}, {"remark": "my buddy"})
    assert adds == [] and doc == {"remark": "my buddy"}


def test_new_contact_takes_the_name_as_its_name() -> None:
    src = {"display_name": "Li Lei", "given_name": "Lei", "family_name": "Li", "remark": "r"}
    doc, provs, _ = merge(src, {}, new_contact=True)
    assert doc == {"display_name": "Li Lei", "given_name": "Lei", "family_name": "Li"}
    assert set(provs) == {"display_name", "given_name", "family_name"}
    # A later re-sync of that contact keeps treating the name as its name.
    doc2, _, adds = merge({**src, "display_name": "Li Lei (Acme)"}, doc, provs)
    assert [(a.slot, a.op) for a in adds] == [("display_name", Op.REPLACE)]
    assert doc2["display_name"] == "Li Lei (Acme)" and "remark" not in doc2


@pytest.mark.parametrize("include", [True, False])
def test_picture_follows_the_user_setting(include: bool) -> None:
    doc, _, _ = merge({"picture_uri": "https://p/1.jpg"}, {}, include_picture=include)
    assert doc.get("picture_uri") == ("https://p/1.jpg" if include else None)
    doc, _, adds = merge(
        {"picture_uri": "https://p/1.jpg"}, {"picture_uri": "mine"}, include_picture=True
    )
    assert adds == [] and doc["picture_uri"] == "mine"


def test_mobile_numbers_are_standardised_and_compared_by_e164() -> None:
    src = {"mobile_numbers": [{"raw": "+86 139-1234-5678"}, {"raw": "0086 138 0013 8000"}]}
    tgt = {"mobile_numbers": [{"raw": "13912345678", "label": "work"}]}
    doc, provs, adds = merge(src, tgt)
    assert [a.slot for a in adds] == ["mobile_numbers[1]"]
    assert doc["mobile_numbers"] == [
        {"raw": "13912345678", "label": "work"},
        {"raw": "0086 138 0013 8000", "e164": "+8613800138000"},
    ]
    assert provs == {"mobile_numbers[1]": M}


def test_unnormalisable_numbers_compare_by_digits() -> None:
    doc, _, adds = merge(
        {"mobile_numbers": [{"raw": "12-34"}]}, {"mobile_numbers": [{"raw": "1234"}]}
    )
    assert adds == [] and len(doc["mobile_numbers"]) == 1


def test_email_variants_are_the_same_address() -> None:
    src = {
        "email_addresses": [
            {"raw": " lilei@Example.COM "},
            {"raw": "mailto:lilei@example.com"},
            {"raw": "hanmeimei@example.org", "label": "home"},
        ]
    }
    doc, _, adds = merge(src, {"email_addresses": [{"raw": "lilei@example.com"}]})
    assert [a.slot for a in adds] == ["email_addresses[1]"]
    assert doc["email_addresses"][1] == {
        "raw": "hanmeimei@example.org",
        "normalized": "hanmeimei@example.org",
        "label": "home",
    }


def test_fixed_numbers_are_a_separate_field() -> None:
    src = {"fixed_numbers": [{"raw": "010 1234 5678"}], "mobile_numbers": []}
    doc, provs, _ = merge(src, {"mobile_numbers": [{"raw": "13912345678"}]})
    assert doc["fixed_numbers"] == [{"raw": "010 1234 5678", "e164": "+861012345678"}]
    assert provs == {"fixed_numbers[0]": M}
    doc, _, adds = merge(src, {"fixed_numbers": [{"raw": "+86 10 12345678"}]})
    assert adds == []


def test_homepage_urls_compare_trimmed_case_and_slash_insensitive() -> None:
    src = {"homepage_urls": [" HTTP://LiLei.Example/blog/ ", "https://other.example/x"]}
    doc, _, adds = merge(src, {"homepage_urls": ["http://lilei.example/blog"]})
    assert doc["homepage_urls"] == ["http://lilei.example/blog", "https://other.example/x"]
    assert len(adds) == 1


def test_address_only_when_the_target_has_none() -> None:
    addr = {"formatted": "1 Road, Beijing", "locality": "Beijing", "region_code": "CN"}
    doc, provs, _ = merge({"address": addr}, {})
    assert doc["address"] == addr and provs == {"address": M}
    doc, _, adds = merge({"address": addr}, {"address": {"formatted": "home"}})
    assert adds == []


def test_company_is_the_most_recent_one() -> None:
    orgs = [
        {"company": "Old", "job_title": "Dev", "start_date": {"year": 2010}},
        {"company": "Newer", "job_title": "Lead", "start_date": {"year": 2018, "month": 3}},
        {"company": "Mid", "start_date": {"year": 2015}},
    ]
    doc, provs, _ = merge({"organizations": orgs}, {})
    assert doc["organizations"] == [orgs[1]] and provs == {"organizations[0]": M}
    current = [*orgs, {"company": "Now Inc", "job_title": "CTO", "current": True}]
    doc, _, _ = merge({"organizations": current}, {"organizations": [{"company": "Old"}]})
    assert doc["organizations"][1] == {"company": "Now Inc", "job_title": "CTO", "current": True}
    doc, _, _ = merge({"organizations": [{"company": "A"}, {"company": "B"}]}, {})
    assert doc["organizations"] == [{"company": "A"}]


def test_job_title_is_filled_into_the_existing_company() -> None:
    src = {"organizations": [{"company": "Acme", "job_title": "CTO", "current": True}]}
    doc, provs, adds = merge(src, {"organizations": [{"company": " ACME "}]})
    assert [(a.slot, a.op, a.value) for a in adds] == [
        ("organizations[0].job_title", Op.ADD, "CTO")
    ]
    assert doc["organizations"] == [{"company": " ACME ", "job_title": "CTO"}]
    assert provs == {"organizations[0].job_title": M}
    assert slots(doc, provs, DEVICE) == [
        ("organizations[0]", DEVICE),
        ("organizations[0].job_title", M),
    ]
    # An existing title is never overwritten.
    doc, _, adds = merge(src, {"organizations": [{"company": "Acme", "job_title": "Boss"}]})
    assert adds == []


def test_birthday_with_unknown_year_is_a_birthday() -> None:
    doc, _, _ = merge({"birthday": {"month": 2, "day": 29}}, {})
    assert doc["birthday"] == {"month": 2, "day": 29}
    _, _, adds = merge({"birthday": {"year": 1990, "month": 1, "day": 1}}, doc)
    assert adds == []


def test_im_ids_compare_by_kind_and_trimmed_id() -> None:
    src = {"im_ids": [{"kind": "QQ", "id": " 123456 "}, {"kind": "MSN", "id": "li@Live.com"}]}
    doc, _, adds = merge(src, {"im_ids": [{"kind": "qq", "id": "123456"}]})
    assert doc["im_ids"] == [{"kind": "qq", "id": "123456"}, {"kind": "msn", "id": "li@Live.com"}]
    assert len(adds) == 1


# --- modification and deletion ---------------------------------------------------------------


def test_undo_removes_only_unmodified_additions_and_counts_kept_ones() -> None:
    tgt = {"display_name": "Lei", "mobile_numbers": [{"raw": "13912345678"}]}
    src = {
        "display_name": "Li Lei",
        "mobile_numbers": [{"raw": "13800138000"}, {"raw": "13700137000"}],
        "birthday": {"month": 1, "day": 2},
    }
    doc, provs, _ = merge(src, tgt)
    phones = [*doc["mobile_numbers"]]
    phones[1] = {**phones[1], "label": "work"}  # user edits one added number
    doc, provs, changed = edit(
        doc, provs, {"mobile_numbers": phones}, ["mobile_numbers"], time=20, default=DEVICE
    )
    assert changed == ["mobile_numbers"]
    assert provs["mobile_numbers[1]"] == Prov(Source.USER_EDIT, merge="m1", time=20)
    assert provs["mobile_numbers[2]"] == M  # untouched addition keeps its provenance
    out, out_provs, counts = undo(doc, provs, merge="m1")
    assert counts == UndoCounts(removed=3, kept_modified=1)
    assert out == {"display_name": "Lei", "mobile_numbers": [tgt["mobile_numbers"][0], phones[1]]}
    assert out_provs == {"mobile_numbers[1]": Prov(Source.USER_EDIT, merge="m1", time=20)}
    # Undoing another merge touches nothing.
    assert undo(doc, provs, merge="other")[:2] == (doc, provs)


def test_edit_then_undo_keeps_the_edit_of_a_scalar_and_a_job_title() -> None:
    src = {"display_name": "Li Lei", "organizations": [{"company": "Acme", "job_title": "CTO"}]}
    doc, provs, _ = merge(src, {"organizations": [{"company": "Acme"}]})
    doc, provs, changed = edit(
        doc,
        provs,
        {"remark": "Lei from Acme", "organizations": [{"company": "Acme", "job_title": "VP"}]},
        ["remark", "organizations"],
        time=30,
        default=DEVICE,
    )
    assert changed == ["remark", "organizations"]
    assert provs["organizations[0].job_title"].source == Source.USER_EDIT
    assert "organizations[0]" not in provs  # the device's organization itself is unchanged
    out, _, counts = undo(doc, provs, merge="m1")
    assert counts == UndoCounts(removed=0, kept_modified=2)
    assert out == doc


def test_edit_carries_provenance_across_reordering_and_rejects_unknown_paths() -> None:
    doc = {
        "mobile_numbers": [{"raw": "13912345678"}, {"raw": "13800138000", "e164": "+8613800138000"}]
    }
    provs = {"mobile_numbers[1]": M}
    reordered = {"mobile_numbers": [doc["mobile_numbers"][1], doc["mobile_numbers"][0]]}
    _, out_provs, changed = edit(doc, provs, reordered, ["mobile_numbers"], time=5, default=DEVICE)
    assert changed == ["mobile_numbers"] and out_provs == {"mobile_numbers[0]": M}
    assert edit(doc, provs, doc, ["mobile_numbers"], time=5, default=DEVICE) == (doc, provs, [])
    with pytest.raises(ValueError, match="etag"):
        edit(doc, provs, {}, ["etag"], time=5, default=DEVICE)
    with pytest.raises(ValueError, match=r"address\.locality"):
        edit(doc, provs, {}, ["address.locality"], time=5, default=DEVICE)
    assert "etag" not in EDITABLE_FIELDS and "im_ids" in EDITABLE_FIELDS


# --- re-sync ---------------------------------------------------------------------------------


def test_resync_replaces_a_merged_job_title_but_not_an_edited_one() -> None:
    src = {"organizations": [{"company": "Acme", "job_title": "Dev", "current": True}]}
    doc, provs, _ = merge(src, {"organizations": [{"company": "Acme"}]})
    promoted = {"organizations": [{"company": "Acme", "job_title": "CTO", "current": True}]}
    doc2, provs2, adds = merge(promoted, doc, provs, merge_id="m2")
    assert [(a.slot, a.op, a.value) for a in adds] == [
        ("organizations[0].job_title", Op.REPLACE, "CTO")
    ]
    assert doc2["organizations"] == [{"company": "Acme", "job_title": "CTO"}]
    assert provs2["organizations[0].job_title"].merge == "m2"
    edited, eprovs, _ = edit(
        doc,
        provs,
        {"organizations": [{"company": "Acme", "job_title": "Chief"}]},
        ["organizations"],
        time=3,
        default=DEVICE,
    )
    assert plan(promoted, edited, eprovs, region="CN", include_picture=False) == []


def test_resync_follows_a_new_current_company_and_a_renamed_source() -> None:
    src = {"display_name": "Li", "organizations": [{"company": "Acme", "job_title": "Dev"}]}
    doc, provs, _ = merge(src, {"mobile_numbers": [{"raw": "13912345678"}]})
    moved = {
        "display_name": "Li Lei",
        "organizations": [
            {"company": "Acme", "job_title": "Dev"},
            {"company": "Initech", "job_title": "CTO", "current": True},
        ],
    }
    doc2, _, adds = merge(moved, doc, provs, merge_id="m2")
    assert {(a.slot, a.op) for a in adds} == {
        ("remark", Op.REPLACE),
        ("organizations[0]", Op.REPLACE),
    }
    assert doc2["remark"] == "Li Lei"
    assert doc2["organizations"] == [{"company": "Initech", "job_title": "CTO", "current": True}]


def test_a_number_removed_from_the_source_removes_the_merged_copy() -> None:
    src = {"mobile_numbers": [{"raw": "13800138000"}, {"raw": "13700137000"}]}
    tgt = {"mobile_numbers": [{"raw": "13912345678"}]}
    doc, provs, _ = merge(src, tgt)
    assert len(doc["mobile_numbers"]) == 3
    doc2, provs2, adds = merge({"mobile_numbers": [src["mobile_numbers"][1]]}, doc, provs)
    assert [(a.slot, a.op) for a in adds] == [("mobile_numbers[1]", Op.REMOVE)]
    assert [n["raw"] for n in doc2["mobile_numbers"]] == ["13912345678", "13700137000"]
    assert provs2 == {"mobile_numbers[1]": M}  # re-indexed after the removal
    # The device's own number is never removed, even if the source lacks it.
    doc3, _, _ = merge({}, doc2, provs2)
    assert doc3 == tgt


def test_apply_skips_stale_additions() -> None:
    adds = plan({"remark": "", "display_name": "Li"}, {}, None, region="CN", include_picture=False)
    user = {"remark": "mine"}
    assert apply(user, {"remark": Prov(Source.USER_EDIT)}, adds, merge="m", time=1)[0] == user
    add_phone = [
        Addition("mobile_numbers", "mobile_numbers[0]", Op.ADD, {"e164": "+8613800138000"})
    ]
    doc, _ = apply({}, None, add_phone, merge="m", time=1)
    assert apply(doc, None, add_phone, merge="m", time=1)[0] == doc  # never duplicated
    removal = Addition(
        "mobile_numbers", "mobile_numbers[0]", Op.REMOVE, None, doc["mobile_numbers"][0]
    )
    assert apply(doc, None, [removal], merge="m", time=1)[0] == doc  # device-owned now


def test_addition_json_round_trip() -> None:
    adds = plan(
        {"display_name": "Li", "organizations": [{"company": "Acme", "job_title": "CTO"}]},
        {"organizations": [{"company": "acme"}]},
        None,
        region="CN",
        include_picture=False,
    )
    assert [Addition.from_json(a.to_json()) for a in adds] == adds
    with pytest.raises(ValueError):
        Addition.from_json({"field": "etag", "slot": "etag", "op": "add"})


# --- device re-uploads and profiles -----------------------------------------------------------


def test_reupload_keeps_merge_additions_the_device_lacks() -> None:
    tgt = {"display_name": "Lei", "mobile_numbers": [{"raw": "13912345678"}]}
    doc, provs, _ = merge({"display_name": "Li Lei", "im_ids": [{"kind": "qq", "id": "1"}]}, tgt)
    fresh = {
        "display_name": "Lei",
        "mobile_numbers": [{"raw": "13912345678"}, {"raw": "13600136000"}],
    }
    out, out_provs, changed = replace_owned(
        doc, provs, fresh, source=Source.DEVICE, default=DEVICE, time=40
    )
    assert changed == ["mobile_numbers"]
    assert out == {**fresh, "remark": "Li Lei", "im_ids": [{"kind": "qq", "id": "1"}]}
    assert out_provs == provs
    # The device now has the addition too: one copy, provenance kept (still undoable).
    again, again_provs, changed = replace_owned(
        out, out_provs, {**out}, source=Source.DEVICE, default=DEVICE, time=41
    )
    assert changed == [] and again == out and again_provs == provs
    assert undo(again, again_provs, merge="m1")[0] == fresh


def test_reupload_of_a_plain_contact_stays_provenance_free() -> None:
    doc = {"display_name": "A", "mobile_numbers": [{"raw": "1"}, {"raw": "2"}]}
    fresh = {"display_name": "B", "mobile_numbers": [{"raw": "2"}]}
    out, provs, changed = replace_owned(
        doc, None, fresh, source=Source.DEVICE, default=DEVICE, time=2
    )
    assert out == fresh and provs == {} and changed == ["display_name", "mobile_numbers"]
    assert replace_owned(doc, {}, doc, source=Source.DEVICE, default=DEVICE, time=3) == (
        doc,
        {},
        [],
    )


def test_reupload_with_a_different_value_wins_over_merge_and_edit() -> None:
    doc = {"remark": "merged", "birthday": {"month": 1, "day": 1}}
    provs = {"remark": M, "birthday": Prov(Source.USER_EDIT, time=5)}
    fresh = {"remark": "typed on phone", "birthday": {"month": 2, "day": 2}}
    out, out_provs, _ = replace_owned(
        doc, provs, fresh, source=Source.DEVICE, default=DEVICE, time=6
    )
    assert out == fresh and out_provs == {}
    # A profile change does not override the user's own edit of a network-book card.
    card = {"display_name": "Nick", "given_name": "Lei"}
    cprovs = {"display_name": Prov(Source.USER_EDIT), "given_name": Prov(Source.PROFILE)}
    profile = {"display_name": "Li Lei", "given_name": "Leo"}
    out, out_provs, changed = replace_owned(
        card, cprovs, profile, source=Source.PROFILE, default=DEVICE, time=7
    )
    assert out == {"display_name": "Nick", "given_name": "Leo"} and changed == ["given_name"]
    assert out_provs == {
        "display_name": Prov(Source.USER_EDIT),
        "given_name": Prov(Source.PROFILE, time=7),
    }


def test_reupload_keeps_a_merged_job_title_inside_a_device_organization() -> None:
    src = {"organizations": [{"company": "Acme", "job_title": "CTO"}]}
    doc, provs, _ = merge(src, {"organizations": [{"company": "Acme"}]})
    fresh = {"organizations": [{"company": "Acme", "start_date": {"year": 2020}}]}
    out, out_provs, _ = replace_owned(
        doc, provs, fresh, source=Source.DEVICE, default=DEVICE, time=9
    )
    assert out["organizations"] == [
        {"company": "Acme", "start_date": {"year": 2020}, "job_title": "CTO"}
    ]
    assert out_provs == {"organizations[0].job_title": M}


# --- helpers ---------------------------------------------------------------------------------


def test_keys_changed_fields_is_empty_and_provenance_json() -> None:
    doc = {
        "name": "users/1/contacts/2",
        "mobile_numbers": [{"raw": "+86 139-1234-5678"}],
        "fixed_numbers": [{"raw": "13912345678"}, {"raw": "nonsense"}],
        "email_addresses": [{"raw": "A@B.COM"}, {"raw": "not an address"}],
        "im_ids": [{"kind": "QQ", "id": "007"}],
    }
    ks = keys(doc, "CN")
    assert [(k, v) for k, _, v in ks] == [(1, "+8613912345678"), (2, "A@b.com"), (3, "qq:7")]
    assert ks[0][1] == 8613912345678
    assert changed_fields(doc, {**doc, "remark": "x", "etag": "1"}) == ["remark"]
    assert changed_fields({"address": {"formatted": ""}}, {}) == []
    assert is_empty({"name": "x", "birthday": {}}) and not is_empty({"birthday": {"day": 1}})
    provs = {"remark": M, "im_ids[0]": Prov(Source.DEVICE, device_id="d", time=3)}
    as_json = provs_to_json(provs)
    assert as_json == {
        "remark": {"source": 2, "merge": "m1", "time": 10},
        "im_ids[0]": {"source": 1, "device_id": "d", "time": 3},
    }
    assert provs_from_json(as_json) == provs
    assert provs_from_json(None) == {} and provs_to_json(None) == {}
    with pytest.raises(ValueError):
        provs_from_json({"remark": {"source": 9}})
