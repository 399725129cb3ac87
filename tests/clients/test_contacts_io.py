"""vCard and CSV reading/writing: field mapping, exact raw bytes, malformed input."""

from __future__ import annotations

import hashlib

import pytest

from befriend.clients.contacts_io import (
    MAX_RAW_BYTES,
    ParseIssue,
    format_for_path,
    read_csv,
    read_vcards,
    write_csv,
    write_vcards,
)
from befriend.v1 import common_pb2, sync_pb2

MOBILE = common_pb2.PHONE_NUMBER_TYPE_MOBILE
FIXED = common_pb2.PHONE_NUMBER_TYPE_FIXED_LINE
FAX = common_pb2.PHONE_NUMBER_TYPE_FAX

# vCard 3.0, CRLF, a folded TEL and a folded UTF-8 NOTE, three TEL types.
VCARD3 = (
    "BEGIN:VCARD\r\n"
    "VERSION:3.0\r\n"
    "N:王;小明;;;\r\n"
    "FN:王小明\r\n"
    "TEL;TYPE=CELL:139 1234 5678\r\n"
    "TEL;TYPE=WORK,VOICE:010-\r\n"
    " 12345678\r\n"
    "TEL;TYPE=HOME,FAX:+86 10 8765 4321\r\n"
    "EMAIL;TYPE=INTERNET,WORK:xiaoming@example.cn\r\n"
    "X-QQ:12345678\r\n"
    "X-MSN:xm@hotmail.com\r\n"
    "ORG:Acme\\, Inc.;R&D\r\n"
    "TITLE:工程师\r\n"
    "BDAY:1985-04-12\r\n"
    "URL:https://xiaoming.example.cn/\r\n"
    "ADR;TYPE=HOME:;;长安街 1 号;北京;北京;100000;CN\r\n"
    "NOTE:一个很长的备注 会被折\r\n"
    " 行。\r\n"
    "PHOTO;ENCODING=b;TYPE=JPEG:MIICajCCAdOgAwIBAgICBEUwDQYJKoZIhvcNAQEEBQAw\r\n"
    "END:VCARD\r\n"
).encode()

# vCard 4.0, LF only, UID, quoted TYPE list, tel: URIs, IMPP, yearless BDAY, data: PHOTO.
VCARD4 = (
    "BEGIN:VCARD\n"
    "VERSION:4.0\n"
    "UID:urn:uuid:4fbe8971-0bc3-424c-9c26-36c3e1eff6b1\n"
    "FN:Zoë Müller\n"
    "N:Müller;Zoë;;;\n"
    'TEL;VALUE=uri;TYPE="voice,cell";PREF=1:tel:+49-170-1234567\n'
    "TEL;VALUE=uri;TYPE=home:tel:+49-30-123456\n"
    "EMAIL;TYPE=home:zoe@example.de\n"
    "EMAIL:zoe.work@example.com\n"
    "IMPP;PREF=1:xmpp:zoe@jabber.example\n"
    "IMPP;X-SERVICE-TYPE=Skype:x-apple:zoe.m\n"
    "BDAY:--0412\n"
    "ADR;TYPE=work:;;Unter den Linden 1;Berlin;;10117;DE\n"
    "ADR;TYPE=home;PREF=1:;;Hauptstr. 5;Potsdam;;14467;DE\n"
    "PHOTO:data:image/png;base64,iVBORw0KGgo=\n"
    "ORG:Example GmbH\n"
    "TITLE:CTO\n"
    "TITLE:Founder\n"
    "END:VCARD\n"
).encode()


def test_vcard3_fields() -> None:
    result = read_vcards(VCARD3)
    assert result.issues == []
    (entry,) = result.entries
    c = entry.contact
    assert (c.display_name, c.given_name, c.family_name) == ("王小明", "小明", "王")
    assert [(p.raw, p.type) for p in c.mobile_numbers] == [("139 1234 5678", MOBILE)]
    assert [(p.raw, p.type, p.label) for p in c.fixed_numbers] == [
        ("010-12345678", FIXED, "work"),  # folded line joined
        ("+86 10 8765 4321", FAX, "home"),
    ]
    assert [(e.raw, e.label) for e in c.email_addresses] == [("xiaoming@example.cn", "work")]
    assert [(i.kind, i.id) for i in c.im_ids] == [("qq", "12345678"), ("msn", "xm@hotmail.com")]
    assert [(o.company, o.job_title) for o in c.organizations] == [("Acme, Inc.", "工程师")]
    assert (c.birthday.year, c.birthday.month, c.birthday.day) == (1985, 4, 12)
    assert list(c.homepage_urls) == ["https://xiaoming.example.cn/"]
    assert c.address.street == "长安街 1 号"
    assert (c.address.locality, c.address.postal_code, c.address.region_code) == (
        "北京",
        "100000",
        "CN",
    )
    assert c.picture_uri == ""  # inline binary photo: not a URI
    assert entry.raw == VCARD3
    assert entry.raw_media_type == "text/vcard"
    assert entry.content_hash == hashlib.sha256(VCARD3).hexdigest()
    assert entry.entry_id == "sha256:" + entry.content_hash[:32]  # no UID
    assert c.device_contact_id == entry.entry_id


def test_vcard4_fields() -> None:
    (entry,) = read_vcards(VCARD4).entries
    c = entry.contact
    assert entry.entry_id == "urn:uuid:4fbe8971-0bc3-424c-9c26-36c3e1eff6b1"
    assert c.display_name == "Zoë Müller"
    assert [(p.raw, p.type) for p in c.mobile_numbers] == [("+49-170-1234567", MOBILE)]
    assert [(p.raw, p.label) for p in c.fixed_numbers] == [("+49-30-123456", "home")]
    assert [e.raw for e in c.email_addresses] == ["zoe@example.de", "zoe.work@example.com"]
    assert [(i.kind, i.id) for i in c.im_ids] == [
        ("xmpp", "zoe@jabber.example"),
        ("skype", "zoe.m"),
    ]
    assert (c.birthday.year, c.birthday.month, c.birthday.day) == (0, 4, 12)
    assert c.address.locality == "Potsdam"  # the preferred ADR
    assert c.picture_uri == "data:image/png;base64,iVBORw0KGgo="
    assert [(o.company, o.job_title) for o in c.organizations] == [
        ("Example GmbH", "CTO"),
        ("", "Founder"),
    ]


def test_file_round_trips_byte_for_byte() -> None:
    data = b"\xef\xbb\xbf" + VCARD3 + VCARD4 + VCARD3.replace(b"\r\n", b"\n")
    result = read_vcards(data)
    assert [e.raw for e in result.entries] == [VCARD3, VCARD4, VCARD3.replace(b"\r\n", b"\n")]
    assert write_vcards(result.entries) == data[3:]  # everything but the BOM
    # identical content -> identical hash-based ids: made unique within the file
    ids = [e.entry_id for e in read_vcards(VCARD3 + VCARD3).entries]
    assert ids[1] == ids[0] + "~2"
    assert read_vcards(VCARD3).entries[0].entry_id == ids[0]  # stable across reads


def test_malformed_vcards_are_reported_and_skipped() -> None:
    bad_line = b"BEGIN:VCARD\r\nVERSION:3.0\r\nFN;;;broken\r\nno colon here\r\nEND:VCARD\r\n"
    unterminated = b"BEGIN:VCARD\r\nVERSION:3.0\r\nFN:Lost\r\n"
    huge = b"BEGIN:VCARD\r\nVERSION:3.0\r\nNOTE:" + b"x" * MAX_RAW_BYTES + b"\r\nEND:VCARD\r\n"
    data = b"garbage before\r\n" + VCARD3 + bad_line + unterminated + VCARD4 + huge + unterminated
    result = read_vcards(data)
    assert [e.contact.display_name for e in result.entries] == ["王小明", "Zoë Müller"]
    issues = result.issues
    assert [(i.index, i.line) for i in issues] == [(None, 1), (1, 22), (2, 27), (4, 49), (5, 53)]
    assert "cannot parse 'FN;;;broken'" in issues[1].reason
    assert "line 24" in issues[1].reason
    assert issues[2].reason == "no END:VCARD before the next BEGIN:VCARD"
    assert "65" in issues[3].reason or str(MAX_RAW_BYTES) in issues[3].reason
    assert issues[4] == ParseIssue(5, 53, "no END:VCARD at the end of the file")
    assert read_vcards(b"").entries == []
    assert read_vcards(b"\xff\xfe\x00garbage").issues[0].index is None


CSV = (
    "\ufeffName,First Name,Last_Name,MOBILE,mobile,Phone,E-Mail,Company,Title,Birthday,"
    "Homepage,Address,QQ,MSN,Notes\r\n"
    '"Doe, John",John,Doe,+1 555 0100,+1 555 0101,(555) 0199,john@example.com,"Acme, Inc",'
    'CEO,1970-01-31,http://john.example,"1 Main St, Springfield",12345,john@msn.com,hi\r\n'
    "\r\n"
    '李雷,雷,李,13912345678,,,lilei@example.cn,,,--0412,,"北京\n海淀",,,"two\r\nlines"\r\n'
    ",,,,,,,,,,,,,,ignored note only\r\n"
    "Solo,,,,,,,,,,,,,,"
)


def test_csv_fields_headers_and_raw_lines() -> None:
    data = CSV.encode()
    result = read_csv(data)
    assert result.ignored_columns == ["Notes"]
    assert result.issues == [ParseIssue(2, 7, "no contact data in the row")]
    john, li, solo = result.entries
    c = john.contact
    assert (c.display_name, c.given_name, c.family_name) == ("Doe, John", "John", "Doe")
    assert [p.raw for p in c.mobile_numbers] == ["+1 555 0100", "+1 555 0101"]
    assert [(p.raw, p.type) for p in c.fixed_numbers] == [("(555) 0199", FIXED)]
    assert [(o.company, o.job_title) for o in c.organizations] == [("Acme, Inc", "CEO")]
    assert (c.birthday.year, c.birthday.month, c.birthday.day) == (1970, 1, 31)
    assert c.address.formatted == "1 Main St, Springfield"
    assert [(i.kind, i.id) for i in c.im_ids] == [("qq", "12345"), ("msn", "john@msn.com")]
    assert li.contact.display_name == "李雷"
    assert li.contact.address.formatted == "北京\n海淀"
    assert (li.contact.birthday.month, li.contact.birthday.day) == (4, 12)
    assert solo.contact.display_name == "Solo"
    lines = data.split(b"\r\n")
    assert john.raw == lines[1]
    assert (
        li.raw
        == '李雷,雷,李,13912345678,,,lilei@example.cn,,,--0412,,"北京\n海淀",,,"two'.encode()
        + (b'\r\nlines"')
    )
    assert solo.raw == lines[-1]
    assert all(e.raw_media_type == "text/csv" for e in result.entries)
    assert john.content_hash == hashlib.sha256(john.raw).hexdigest()
    # header-independent: the same row under another header keeps its raw bytes and id
    other = read_csv(b"Full Name,cell,x,y\r\n" + john.raw + b"\r\n").entries[0]
    assert (other.raw, other.entry_id) == (john.raw, john.entry_id)
    assert other.contact.display_name == "Doe, John"


def test_csv_chinese_headers_gb18030_and_uid() -> None:
    text = "姓名,手机,邮箱,公司,职位,uid\r\n韩梅梅,13800000000,hmm@example.cn,某公司,经理,u-7\r\n"
    result = read_csv(text.encode("gb18030"))
    (entry,) = result.entries
    assert entry.entry_id == "u-7"
    assert entry.contact.display_name == "韩梅梅"
    assert entry.contact.mobile_numbers[0].raw == "13800000000"
    assert entry.contact.organizations[0].job_title == "经理"
    assert entry.raw == text.encode("gb18030").split(b"\r\n")[1]
    assert read_csv(b"").issues == [ParseIssue(None, 1, "no header row")]
    broken = read_csv(b'name,mobile\r\n"unterminated,1\r\n')
    assert broken.entries == [] and broken.issues[0].index == 0


def test_exports_read_back() -> None:
    csv_entries = read_csv(CSV.encode()).entries
    again = read_csv(write_csv(csv_entries)).entries
    assert [e.contact for e in again] == [e.contact for e in csv_entries]
    assert [e.entry_id for e in again] == [e.entry_id for e in csv_entries]
    # CSV entries have no vCard of their own: one is written from the parsed fields
    as_vcards = read_vcards(write_vcards(csv_entries))
    assert as_vcards.issues == []
    assert [e.entry_id for e in as_vcards.entries] == [e.entry_id for e in csv_entries]
    john = as_vcards.entries[0].contact
    assert john.display_name == "Doe, John" and len(john.mobile_numbers) == 2
    assert [(i.kind, i.id) for i in john.im_ids] == [("qq", "12345"), ("msn", "john@msn.com")]
    # vCard entries export to CSV too; deleted entries are left out
    vcard_entries = read_vcards(VCARD3 + VCARD4).entries
    deleted = sync_pb2.AddressBookEntry(entry_id="gone", deleted=True)
    rows = read_csv(write_csv([*vcard_entries, deleted])).entries
    assert [r.contact.display_name for r in rows] == ["王小明", "Zoë Müller"]
    assert rows[0].contact.fixed_numbers[1].type == FAX
    assert write_vcards([*vcard_entries, deleted]) == VCARD3 + VCARD4


def test_format_for_path() -> None:
    assert format_for_path("a/b.VCF") == format_for_path("x.vcard") == "vcf"
    assert format_for_path("book.csv") == "csv"
    with pytest.raises(ValueError, match="cannot tell the format"):
        format_for_path("book.txt")
