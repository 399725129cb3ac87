"""The fast Contact <-> document conversion equals json_format's, both ways."""

from __future__ import annotations

from google.protobuf import json_format
from hypothesis import given, settings
from hypothesis import strategies as st

from befriend.server.api import contactdoc
from befriend.v1 import common_pb2

text = st.text(max_size=8)
phone_types = st.sampled_from(list(common_pb2.PhoneNumberType.values()))
dates = st.builds(
    common_pb2.Date,
    year=st.integers(0, 3000),
    month=st.integers(0, 12),
    day=st.integers(0, 31),
)
phones = st.builds(common_pb2.PhoneNumber, raw=text, e164=text, type=phone_types, label=text)
contacts = st.builds(
    common_pb2.Contact,
    display_name=text,
    remark=text,
    picture_uri=text,
    mobile_numbers=st.lists(phones, max_size=3),
    fixed_numbers=st.lists(phones, max_size=2),
    email_addresses=st.lists(
        st.builds(common_pb2.EmailAddress, raw=text, normalized=text, label=text), max_size=2
    ),
    homepage_urls=st.lists(text, max_size=2),
    address=st.none() | st.builds(common_pb2.PostalAddress, formatted=text, locality=text),
    organizations=st.lists(
        st.builds(
            common_pb2.Organization,
            company=text,
            job_title=text,
            start_date=st.none() | dates,
            current=st.booleans(),
        ),
        max_size=2,
    ),
    birthday=st.none() | dates,
    im_ids=st.lists(st.builds(common_pb2.ImId, kind=text, id=text), max_size=2),
)


@settings(max_examples=200)
@given(contacts, st.booleans())
def test_matches_json_format(contact: common_pb2.Contact, stamped: bool) -> None:
    if stamped:
        contact.update_time.seconds = 1_700_000_000
    doc = json_format.MessageToDict(contact, preserving_proto_field_name=True)
    assert contactdoc.to_doc(contact) == doc
    assert contactdoc.from_doc(doc) == contact


def test_unknown_keys_are_ignored() -> None:
    assert contactdoc.from_doc({"display_name": "A", "nope": 1}) == common_pb2.Contact(
        display_name="A"
    )
