"""Hypothesis properties of befriend.core.merge: plans are idempotent, undo restores an
unedited target exactly, provenance JSON round-trips, and the provenance map stays aligned
with the document's slots through any sequence of apply / edit / undo / re-upload."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from befriend.core.merge import (
    EDITABLE_FIELDS,
    LIST_FIELDS,
    Prov,
    Source,
    apply,
    edit,
    plan,
    provs_from_json,
    provs_to_json,
    replace_owned,
    slots,
    undo,
)

DEVICE = Prov(Source.DEVICE, device_id="phone", time=1)
REGION = "CN"

# Small pools so that source and target often share (variants of) the same values.
MOBILES = [
    "13912345678",
    "+86 139-1234-5678",
    "0086 13800138000",
    "138-0013-8000",
    "13700137000",
    "17951 13600136000",
    "98765432",
    "12-34",
]
FIXED = ["010 1234 5678", "+86 10 12345678", "021-87654321", "17951 010 12345678"]
EMAILS = ["li@example.com", " li@Example.COM ", "mailto:han@example.org", "Han@example.org", "x"]
URLS = ["http://li.example/", "HTTP://LI.example", "https://han.example/blog", "li.example/a"]
IMS = [("qq", "123"), ("QQ", " 0123 "), ("msn", "li@Live.com"), ("skype", "li.lei")]
COMPANIES = ["Acme", " acme ", "Initech", "Globex"]
TITLES = ["", "Dev", "CTO"]
NAMES = ["", "Li", "Li Lei", "Han"]

dates = st.builds(
    lambda y, m, d: {k: v for k, v in (("year", y), ("month", m), ("day", d)) if v},
    st.sampled_from([0, 1990, 2015, 2020]),
    st.integers(1, 12),
    st.integers(1, 28),
)


def _clean(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v not in ("", False, None, {}, [])}


phones = st.builds(
    lambda raw, label: _clean({"raw": raw, "label": label}),
    st.sampled_from(MOBILES),
    st.sampled_from(["", "work"]),
)
fixed = st.builds(lambda raw: {"raw": raw}, st.sampled_from(FIXED))
emails = st.builds(lambda raw: {"raw": raw}, st.sampled_from(EMAILS))
ims = st.sampled_from(IMS).map(lambda kv: {"kind": kv[0], "id": kv[1]})
orgs = st.builds(
    lambda c, t, sd, cur: _clean({"company": c, "job_title": t, "start_date": sd, "current": cur}),
    st.sampled_from(COMPANIES),
    st.sampled_from(TITLES),
    st.one_of(st.just({}), dates),
    st.booleans(),
)
addresses = st.sampled_from(
    [{}, {"formatted": "1 Road, Beijing"}, {"locality": "Shanghai", "region_code": "CN"}]
)


@st.composite
def docs(draw: st.DrawFn) -> dict[str, Any]:
    doc = {
        "display_name": draw(st.sampled_from(NAMES)),
        "given_name": draw(st.sampled_from(["", "Lei"])),
        "family_name": draw(st.sampled_from(["", "Li"])),
        "remark": draw(st.sampled_from(["", "buddy"])),
        "picture_uri": draw(st.sampled_from(["", "https://p/1", "https://p/2"])),
        "mobile_numbers": draw(st.lists(phones, max_size=3)),
        "email_addresses": draw(st.lists(emails, max_size=2)),
        "fixed_numbers": draw(st.lists(fixed, max_size=2)),
        "homepage_urls": draw(st.lists(st.sampled_from(URLS), max_size=2)),
        "address": draw(addresses),
        "organizations": draw(st.lists(orgs, max_size=3)),
        "birthday": draw(st.one_of(st.just({}), dates)),
        "im_ids": draw(st.lists(ims, max_size=2)),
    }
    if draw(st.booleans()):
        doc["etag"] = "e1"
    return _clean(doc)


def expected_slots(doc: dict[str, Any], provs: dict[str, Prov]) -> set[str]:
    out = set()
    for field in EDITABLE_FIELDS:
        value = doc.get(field)
        if field in LIST_FIELDS:
            for i, item in enumerate(value or []):
                out.add(f"{field}[{i}]")
                sub = f"{field}[{i}].job_title"
                if sub in provs and item.get("job_title"):
                    out.add(sub)
        elif value:
            out.add(field)
    return out


def check_aligned(
    doc: dict[str, Any], provs: dict[str, Prov], written: dict[str, list[Any]]
) -> None:
    listed = slots(doc, provs, DEVICE)
    names = [s for s, _ in listed]
    assert len(names) == len(set(names))
    assert set(names) == expected_slots(doc, provs)
    assert set(provs) <= set(names)  # no stale entries
    # Every merged slot holds a value its merge wrote (indices followed the removals).
    for slot, p in listed:
        if p.source != Source.NETWORK_MERGE:
            continue
        field, _, rest = slot.partition("[")
        if not rest:
            assert doc[slot] in written[p.merge]
        elif rest.endswith("job_title"):
            i = int(rest.split("]")[0])
            assert doc[field][i]["job_title"] in written[p.merge]
        else:
            assert doc[field][int(rest[:-1])] in written[p.merge]


def tweak(value: Any, idx: int) -> Any:
    """The value with one part changed: a scalar, or item ``idx`` of a list."""
    if isinstance(value, str):
        return value + "!"
    if isinstance(value, dict):
        return {**value, "day": 27} if "day" in value or not value else {**value, "street": "x"}
    if isinstance(value, list) and value:
        items = list(value)
        i = idx % len(items)
        item = items[i]
        if isinstance(item, str):
            items[i] = item + "x"
        elif "company" in item:
            items[i] = {**item, "job_title": item.get("job_title", "") + "+"}
        else:
            items[i] = {**item, "label": "edited"}
        return items
    return value


settings_ = settings(max_examples=150, deadline=None)


@settings_
@given(docs(), docs(), st.booleans(), st.booleans(), docs())
def test_replanning_after_apply_is_empty(
    source: dict[str, Any], target: dict[str, Any], pic: bool, new: bool, later: dict[str, Any]
) -> None:
    adds = plan(source, target, None, region=REGION, include_picture=pic, new_contact=new)
    doc, provs = apply(target, None, adds, merge="m1", time=1, region=REGION)
    assert plan(source, doc, provs, region=REGION, include_picture=pic, new_contact=new) == []
    # ... and so is a re-sync against a changed source (replacements and removals included).
    adds = plan(later, doc, provs, region=REGION, include_picture=pic, new_contact=new)
    doc, provs = apply(doc, provs, adds, merge="m2", time=2, region=REGION)
    assert plan(later, doc, provs, region=REGION, include_picture=pic, new_contact=new) == []


@settings_
@given(docs(), docs(), st.booleans(), st.booleans())
def test_undo_restores_an_unedited_target(
    source: dict[str, Any], target: dict[str, Any], pic: bool, new: bool
) -> None:
    adds = plan(source, target, None, region=REGION, include_picture=pic, new_contact=new)
    doc, provs = apply(target, None, adds, merge="m1", time=1, region=REGION)
    restored, left, counts = undo(doc, provs, merge="m1")
    assert restored == target
    assert left == {}
    assert counts.removed == len(adds) and counts.kept_modified == 0


provs_maps = st.dictionaries(
    st.sampled_from(["remark", "address", "mobile_numbers[0]", "organizations[2].job_title"]),
    st.builds(
        Prov,
        st.sampled_from(list(Source)),
        st.text(max_size=5),
        st.text(max_size=5),
        st.integers(0, 2**62),
    ),
)


@settings_
@given(provs_maps)
def test_provenance_json_round_trips(provs: dict[str, Prov]) -> None:
    assert provs_from_json(provs_to_json(provs)) == provs


step = st.one_of(
    st.tuples(st.just("merge"), docs(), st.booleans()),
    st.tuples(st.just("edit"), docs(), st.lists(st.sampled_from(sorted(EDITABLE_FIELDS)))),
    st.tuples(st.just("tweak"), st.sampled_from(sorted(EDITABLE_FIELDS)), st.integers(0, 3)),
    st.tuples(st.just("undo"), st.integers(1, 3)),
    st.tuples(st.just("upload"), docs(), st.sampled_from([Source.DEVICE, Source.PROFILE])),
)


@settings(max_examples=150, deadline=None)
@given(docs(), st.lists(step, max_size=6))
def test_slots_stay_aligned_through_any_history(
    start: dict[str, Any], history: list[tuple[Any, ...]]
) -> None:
    doc: dict[str, Any] = start
    provs: dict[str, Prov] = {}
    written: dict[str, list[Any]] = {}
    merges = 0
    for i, (kind, *args) in enumerate(history):
        if kind == "merge":
            source, pic = args
            merges += 1
            mid = f"m{merges}"
            adds = plan(source, doc, provs, region=REGION, include_picture=pic)
            written[mid] = [a.value for a in adds]
            doc, provs = apply(doc, provs, adds, merge=mid, time=i, region=REGION)
        elif kind == "edit":
            changes, paths = args
            doc, provs, changed = edit(doc, provs, changes, paths, time=i, default=DEVICE)
            assert set(changed) <= set(paths)
            for p in provs.values():
                assert p.source != Source.USER_EDIT or not p.merge or p.merge in written
        elif kind == "tweak":  # the user modifies one value in place (often an addition)
            field, idx = args
            before = doc.get(field)
            value = tweak(before, idx)
            doc, provs, changed = edit(doc, provs, {field: value}, [field], time=i, default=DEVICE)
            assert changed == ([field] if value != before else [])
        elif kind == "undo":
            mid = f"m{args[0]}"
            edited = {s: p for s, p in provs.items() if p.source == Source.USER_EDIT}
            doc, provs, counts = undo(doc, provs, merge=mid)
            assert counts.kept_modified == sum(p.merge == mid for p in edited.values())
            assert set(provs.values()) >= set(edited.values())  # edits survive the undo
            assert all(p.merge != mid or p.source != Source.NETWORK_MERGE for p in provs.values())
        else:
            fresh, source = args
            doc, provs, _ = replace_owned(
                doc, provs, fresh, source=source, default=DEVICE, time=i, region=REGION
            )
        check_aligned(doc, provs, written)
