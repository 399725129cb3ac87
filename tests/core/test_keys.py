"""The key kernel (befriend.core.keys): the wire scan of a contact against protobuf's own
parse, entry_keys rows against a plain per-entry oracle, and compiled vs reference."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from befriend.core import PUREPYTHON, _pykeys, keys
from befriend.v1 import common_pb2, sync_pb2

LAYOUT = keys.ContactLayout(
    mobile=8,
    fixed=10,
    email=9,
    im=15,
    phone_raw=1,
    email_raw=1,
    im_kind=1,
    im_id=2,
    flag_fields=(1, 16, 14),
)
PHONE = 1
TOP = 2**64

text = st.text(max_size=12)
phones = st.lists(st.builds(common_pb2.PhoneNumber, raw=text, label=text), max_size=4)


@st.composite
def contacts(draw: Any) -> common_pb2.Contact:
    c = common_pb2.Contact(
        name=draw(text),
        display_name=draw(text),
        etag=draw(text),
        homepage_urls=draw(st.lists(text, max_size=3)),
    )
    c.mobile_numbers.extend(draw(phones))
    c.fixed_numbers.extend(draw(phones))
    for raw in draw(st.lists(text, max_size=3)):
        c.email_addresses.add(raw=raw, label="home")
    for kind, ident in draw(st.lists(st.tuples(text, text), max_size=3)):
        c.im_ids.add(kind=kind, id=ident)
    if draw(st.booleans()):
        c.birthday.SetInParent()
        c.birthday.year = draw(st.integers(0, 3000))
    if draw(st.booleans()):
        c.address.locality = draw(text)
    return c


def expected(c: common_pb2.Contact) -> tuple[Any, ...]:
    flags = (1 if c.name else 0) | (2 if c.etag else 0) | (4 if c.HasField("birthday") else 0)
    return (
        tuple(p.raw for p in [*c.mobile_numbers, *c.fixed_numbers]),
        tuple(e.raw for e in c.email_addresses),
        tuple((im.kind, im.id) for im in c.im_ids),
        flags,
    )


@settings(max_examples=300, deadline=None)
@given(contacts(), st.binary(max_size=6))
def test_contact_identities_match_protobuf(c: common_pb2.Contact, junk: bytes) -> None:
    data = c.SerializeToString(deterministic=True)
    assert keys.contact_identities(data, LAYOUT) == expected(c)
    assert _pykeys.contact_identities(data, LAYOUT) == expected(c)
    # unknown fields (and known numbers with another wire type) are skipped like a parser
    odd = data + b"\x40\x07" + b"\xa0\x06\x01"  # field 8 as a varint, field 100 varint
    parsed = common_pb2.Contact.FromString(odd)
    assert keys.contact_identities(odd, LAYOUT) == expected(parsed)
    # truncated or garbage bytes: both raise WireError or agree
    for broken in (data[: len(data) // 2] + junk, junk):
        outcomes: list[object] = []
        for impl in (keys.contact_identities, _pykeys.contact_identities):
            try:
                outcomes.append(impl(broken, LAYOUT))
            except (keys.WireError, UnicodeDecodeError) as exc:
                outcomes.append(type(exc))
        assert outcomes[0] == outcomes[1]


def test_contact_identities_empty_and_flags() -> None:
    assert keys.contact_identities(b"", LAYOUT) == ((), (), (), 0)
    c = common_pb2.Contact(etag="e")
    c.mobile_numbers.add()  # a number without raw still counts, as ""
    assert keys.contact_identities(c.SerializeToString(), LAYOUT) == (("",), (), (), 2)
    with pytest.raises(keys.WireError):
        keys.contact_identities(b"\x42\x05ab", LAYOUT)


# -- upload entries ------------------------------------------------------------------------

ENTRIES = keys.EntryLayout(
    entries=6, entry_id=1, raw=2, media_type=3, contact=4, content_hash=5, deleted=6
)
SMALL = 30  # contacts longer than this many bytes are noted


@st.composite
def upload_requests(draw: Any) -> sync_pb2.UploadContactsRequest:
    request = sync_pb2.UploadContactsRequest(
        upload_id=draw(text), sequence_number=draw(st.integers(0, 2**40)), final=True
    )
    for _ in range(draw(st.integers(0, 4))):
        entry = request.entries.add(
            entry_id=draw(text),
            raw=draw(st.binary(max_size=20)),
            raw_media_type=draw(text),
            content_hash=draw(st.text("0123456789abcdefABCDEF", max_size=8)),
            deleted=draw(st.booleans()),
        )
        if draw(st.booleans()):
            entry.contact.CopyFrom(draw(contacts()))
    return request


def _fields(*values: Any) -> tuple[Any, ...]:
    return values


def _varint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    return bytes([*out, n])


def parsed(request: sync_pb2.UploadContactsRequest) -> tuple[list[Any], list[tuple[int, int]]]:
    """What upload_entries must give, from protobuf's parse of the same bytes."""
    made, notes = [], []
    for i, e in enumerate(request.entries):
        phones, emails, ims, flagged = expected(e.contact)
        body = e.contact.SerializeToString(deterministic=True)
        fields = (e.entry_id, e.raw, e.raw_media_type, e.content_hash.lower(), body)
        made.append((*fields, phones, emails, ims, e.deleted))
        if flagged or len(body) > SMALL:
            notes.append((i, flagged))
    return made, notes


@settings(max_examples=300, deadline=None)
@given(upload_requests(), st.binary(max_size=6))
def test_upload_entries_match_protobuf(
    request: sync_pb2.UploadContactsRequest, junk: bytes
) -> None:
    assert request.DESCRIPTOR.fields_by_name["entries"].number == ENTRIES.entries
    data = request.SerializeToString(deterministic=True)
    for impl in (keys.upload_entries, _pykeys.upload_entries):
        assert impl(data, ENTRIES, LAYOUT, _fields, SMALL) == parsed(request)
    # One more entry written as two records of it back to back, with an unknown field and a
    # known number of another wire type: a parser reads singular fields' last values and
    # merges the contacts (the scan hands the contacts' records concatenated: other bytes
    # than a fresh serialisation, the same message).
    first = request.entries[0] if request.entries else sync_pb2.AddressBookEntry()
    second = sync_pb2.AddressBookEntry(entry_id="again", raw=b"x")
    second.contact.mobile_numbers.add(raw="+1 650 253 0000")
    odd = first.SerializeToString() + second.SerializeToString() + b"\x10\x07\xa0\x06\x01"
    data += b"\x32" + _varint(len(odd)) + odd + b"\xa0\x06\x01"
    again = sync_pb2.UploadContactsRequest.FromString(data)
    want, want_notes = parsed(again)
    for impl in (keys.upload_entries, _pykeys.upload_entries):
        got, notes = impl(data, ENTRIES, LAYOUT, _fields, SMALL)
        # (the flags agree; which contacts are longer than SMALL may not: other bytes)
        assert [n for n in notes if n[1]] == [n for n in want_notes if n[1]]
        assert [g[:4] + g[5:] for g in got] == [w[:4] + w[5:] for w in want]
        assert [common_pb2.Contact.FromString(g[4]) for g in got] == [
            common_pb2.Contact.FromString(w[4]) for w in want
        ]
    # truncated or garbage bytes: both raise WireError or agree
    for broken in (data[: len(data) // 2] + junk, junk):
        outcomes: list[object] = []
        for impl in (keys.upload_entries, _pykeys.upload_entries):
            try:
                outcomes.append(impl(broken, ENTRIES, LAYOUT, _fields, SMALL))
            except (keys.WireError, UnicodeDecodeError) as exc:
                outcomes.append(type(exc))
        assert outcomes[0] == outcomes[1]


def test_upload_entries_empty() -> None:
    assert keys.upload_entries(b"", ENTRIES, LAYOUT, _fields, SMALL) == ([], [])
    one = sync_pb2.UploadContactsRequest(entries=[sync_pb2.AddressBookEntry()])
    assert keys.upload_entries(one.SerializeToString(), ENTRIES, LAYOUT, _fields, SMALL) == (
        [("", b"", "", "", b"", (), (), (), False)],
        [],
    )


# -- key rows ------------------------------------------------------------------------------

values = st.sampled_from(["+8613800000000", "+85291234567", "a@b.c", "qq:1", "x", ""])


@st.composite
def chunks(draw: Any) -> dict[str, Any]:
    n = draw(st.integers(0, 6))
    p_owner = sorted(draw(st.lists(st.integers(0, max(n - 1, 0)), max_size=12))) if n else []
    np_ = len(p_owner)
    o_owner = sorted(draw(st.lists(st.integers(0, max(n - 1, 0)), max_size=8))) if n else []
    no = len(o_owner)
    return {
        "entry_pks": draw(st.lists(st.integers(-1, 2**40), min_size=n, max_size=n)),
        "phone_owner": p_owner,
        "phone_ok": draw(st.lists(st.booleans(), min_size=np_, max_size=np_)),
        "phone_key": draw(st.lists(st.integers(1, TOP - 1), min_size=np_, max_size=np_)),
        "phone_weak": draw(st.lists(st.sampled_from([0, 1234567, 7]), min_size=np_, max_size=np_)),
        "phone_e164": draw(st.lists(values, min_size=np_, max_size=np_)),
        "phone_raw": draw(
            st.lists(values | st.text(min_size=300, max_size=340), min_size=np_, max_size=np_)
        ),
        "other_owner": o_owner,
        "other_kind": draw(st.lists(st.sampled_from([2, 3]), min_size=no, max_size=no)),
        "other_key": draw(st.lists(st.integers(1, TOP - 1), min_size=no, max_size=no)),
        "other_value": draw(st.lists(values, min_size=no, max_size=no)),
    }


def oracle(c: dict[str, Any]) -> list[tuple[Any, ...]]:
    """The upload path's rules written plainly: per entry, its records, then dedupe, each
    row numbered within its entry."""
    rows = []
    for i, pk in enumerate(c["entry_pks"]):
        records = []
        for j, owner in enumerate(c["phone_owner"]):
            ok, weak = c["phone_ok"][j], c["phone_weak"][j]
            if owner == i and (ok or weak):
                key = c["phone_key"][j] if ok else None
                value = c["phone_e164"][j] if ok else c["phone_raw"][j][:320]
                records.append((PHONE, key, weak or None, value))
        for j, owner in enumerate(c["other_owner"]):
            if owner == i:
                records.append((c["other_kind"][j], c["other_key"][j], None, c["other_value"][j]))
        seen: list[tuple[int, str]] = []
        for kind, key, weak, value in records:
            if pk >= 0 and (kind, value) not in seen:
                signed = key - TOP if key is not None and key >= 2**63 else key
                rows.append((pk, "u1", kind, signed, weak, value, len(seen)))
                seen.append((kind, value))
    return rows


def call(impl: Any, c: dict[str, Any]) -> list[tuple[Any, ...]]:
    return list(
        impl(
            "u1",
            c["entry_pks"],
            PHONE,
            np.array(c["phone_owner"], dtype=np.int64),
            np.array(c["phone_ok"], dtype=bool),
            np.array(c["phone_key"], dtype=np.uint64),
            np.array(c["phone_weak"], dtype=np.uint64),
            c["phone_e164"],
            c["phone_raw"],
            c["other_owner"],
            c["other_kind"],
            c["other_key"],
            c["other_value"],
        )
    )


@settings(max_examples=400, deadline=None)
@given(chunks())
def test_key_rows_match_oracle_and_reference(c: dict[str, Any]) -> None:
    want = oracle(c)
    assert call(keys.key_rows, c) == want
    assert call(_pykeys.key_rows, c) == want


def test_key_rows_checks_its_columns() -> None:
    base = {
        "entry_pks": [1, 2],
        "phone_owner": [1, 0],
        "phone_ok": [True, True],
        "phone_key": [5, 6],
        "phone_weak": [0, 0],
        "phone_e164": ["a", "b"],
        "phone_raw": ["a", "b"],
        "other_owner": [],
        "other_kind": [],
        "other_key": [],
        "other_value": [],
    }
    for impl in (keys.key_rows, _pykeys.key_rows):
        with pytest.raises(ValueError, match="non-decreasing"):
            call(impl, base)
        with pytest.raises(ValueError, match="out of range"):
            call(impl, base | {"phone_owner": [0, 2]})
        with pytest.raises(ValueError, match="length"):
            call(impl, base | {"phone_owner": [0, 1], "phone_e164": ["a"]})


def test_implementation_selected() -> None:
    assert keys._m.__name__.endswith("_pykeys" if PUREPYTHON else "_ckeys")
