"""Read and write address books: vCard 3.0/4.0 (and lenient 2.1) and CSV.

Every contact read becomes a :class:`befriend.v1.sync_pb2.AddressBookEntry`:

* ``raw``: the contact's original bytes, untouched. For a vCard, the bytes from the start of
  its ``BEGIN:VCARD`` line to the end of its ``END:VCARD`` line *including* that line's line
  break, so concatenating the ``raw`` of every entry of a file gives the file back (minus a
  UTF-8 byte-order mark and anything between or around the cards). For CSV, the bytes of
  the record's line(s) *without* the final line break (a quoted field may span lines); the
  header row is not part of it, so the same row under another header has the same hash.
* ``raw_media_type``: ``"text/vcard"`` or ``"text/csv"``.
* ``content_hash``: lower-case hex SHA-256 of ``raw``.
* ``entry_id``: the vCard ``UID`` (CSV: a ``uid``/``id`` column) when present and at most 128
  characters, otherwise ``"sha256:"`` + the first 32 hex digits of ``content_hash`` (stable
  across imports of the same bytes). A repeated id within one file gets ``~2``, ``~3`` ...
* ``contact``: the fields of seed 000 Table 2 parsed from the entry (``device_contact_id`` =
  ``entry_id``).

vCard mapping: ``FN`` -> display_name (else built from ``N``); ``N`` -> family/given name;
``TEL`` with ``TYPE=CELL`` (or ``mobile``/``iphone``) -> mobile_numbers, every other ``TEL`` ->
fixed_numbers (``FAX`` typed as fax, ``PAGER`` as other); ``EMAIL`` -> email_addresses;
``IMPP``, ``X-QQ``, ``X-MSN``, ``X-SKYPE``, ``X-WECHAT``, ... -> im_ids; ``ORG``/``TITLE`` ->
organizations (paired in order); ``BDAY`` -> birthday (``--MMDD`` gives year 0); ``URL`` ->
homepage_urls; the preferred (else first) ``ADR`` -> address; ``PHOTO`` -> picture_uri only
when it is an ``http(s):`` or ``data:`` URI (inline binary photos are not copied); ``NOTE``
and anything else are ignored (they stay in ``raw``).

CSV columns (header row required; case, spaces, ``-`` and ``_`` are ignored; a column may be
repeated, e.g. two ``mobile`` columns; unknown columns are listed in ``ignored_columns``):

=====================  ==========================================================
display name           name, full name, display name, fn, 姓名
given name             given name, first name, given, 名
family name            family name, last name, surname, family, 姓
mobile number          mobile, mobile phone, cell, cell phone, cellphone, 手机
fixed number           phone, telephone, tel, home phone, work phone, landline,
                       fixed, fixed phone, other phone, 电话
fax                    fax, 传真
e-mail                 email, e-mail, email address, mail, 邮箱, 电子邮件
company                company, organization, organisation, org, 公司
job title              title, job title, position, 职位
birthday               birthday, bday, date of birth, dob, 生日
home page              homepage, url, website, web page, web, 主页
address                address, home address, adr, 地址
IM ids                 qq, msn, skype, wechat, weixin, icq, aim, yahoo, xmpp, jabber,
                       im (a ``kind:id`` value)
entry id               uid, id, entry id
=====================  ==========================================================

Malformed input never raises: each skipped record is reported as a :class:`ParseIssue`
(0-based record index, 1-based line, reason).
"""

from __future__ import annotations

import csv
import hashlib
import io
import quopri
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from vobject import base as vobject_base  # type: ignore[import-untyped]

from befriend.v1 import common_pb2, sync_pb2

__all__ = [
    "CSV_MEDIA_TYPE",
    "MAX_RAW_BYTES",
    "VCARD_MEDIA_TYPE",
    "ParseIssue",
    "ParseResult",
    "content_hash",
    "format_for_path",
    "read_contacts",
    "read_csv",
    "read_vcards",
    "write_csv",
    "write_vcards",
]

VCARD_MEDIA_TYPE = "text/vcard"
CSV_MEDIA_TYPE = "text/csv"
#: Largest ``raw`` the server accepts (sync.proto: "At most 64 KiB").
MAX_RAW_BYTES = 64 * 1024
_MAX_ENTRY_ID = 128
_BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True)
class ParseIssue:
    """A record that was skipped (or text that was not a record).

    ``index`` is the 0-based ordinal of the vCard (or CSV data row) in the file, ``None`` for
    text outside any vCard; ``line`` is the 1-based physical line where it starts.
    """

    index: int | None
    line: int
    reason: str


@dataclass
class ParseResult:
    """The entries read from a file, in file order, and what was skipped."""

    entries: list[sync_pb2.AddressBookEntry] = field(default_factory=list)
    issues: list[ParseIssue] = field(default_factory=list)
    ignored_columns: list[str] = field(default_factory=list)


def content_hash(raw: bytes) -> str:
    """Lower-case hex SHA-256 of ``raw`` (``AddressBookEntry.content_hash``)."""
    return hashlib.sha256(raw).hexdigest()


def format_for_path(path: str | Path) -> str:
    """``"vcf"`` or ``"csv"`` from a file name's extension; ``ValueError`` otherwise."""
    suffix = Path(path).suffix.lower()
    if suffix in (".vcf", ".vcard", ".vcards"):
        return "vcf"
    if suffix == ".csv":
        return "csv"
    raise ValueError(f"cannot tell the format of {path!s}: use a .vcf, .vcard or .csv file")


def read_contacts(path: str | Path) -> ParseResult:
    """Read a ``.vcf``/``.vcard`` or ``.csv`` file (by extension)."""
    data = Path(path).read_bytes()
    return read_vcards(data) if format_for_path(path) == "vcf" else read_csv(data)


# --------------------------------------------------------------------------------------
# Entries
# --------------------------------------------------------------------------------------


class _Ids:
    """Hands out entry ids, making repeated ones unique within one file."""

    def __init__(self) -> None:
        self._seen: Counter[str] = Counter()

    def take(self, preferred: str, raw_hash: str) -> str:
        base = preferred if preferred and len(preferred) <= _MAX_ENTRY_ID - 8 else ""
        base = base or f"sha256:{raw_hash[:32]}"
        self._seen[base] += 1
        n = self._seen[base]
        return base if n == 1 else f"{base}~{n}"


def _entry(
    raw: bytes, media_type: str, contact: common_pb2.Contact, uid: str, ids: _Ids
) -> sync_pb2.AddressBookEntry:
    digest = content_hash(raw)
    entry_id = ids.take(uid.strip(), digest)
    contact.device_contact_id = entry_id
    return sync_pb2.AddressBookEntry(
        entry_id=entry_id,
        raw=raw,
        raw_media_type=media_type,
        contact=contact,
        content_hash=digest,
    )


def _decode(raw: bytes) -> str | None:
    for encoding in ("utf-8", "gb18030"):
        try:
            return raw.decode(encoding)
        except UnicodeDecodeError:
            continue
    return None


def _is_cjk(text: str) -> bool:
    return any("\u3040" <= ch <= "\u9fff" or "\uac00" <= ch <= "\ud7af" for ch in text)


def _display_name(given: str, family: str) -> str:
    if _is_cjk(given + family):
        return family + given
    return " ".join(p for p in (given, family) if p)


_DATE_RES = (
    re.compile(r"^(?P<y>\d{4})-?(?P<m>\d{2})-?(?P<d>\d{2})(?:T.*)?$"),
    re.compile(r"^(?P<y>\d{4})[/.](?P<m>\d{1,2})[/.](?P<d>\d{1,2})$"),
    re.compile(r"^--(?P<m>\d{2})-?(?P<d>\d{2})$"),
)


def _parse_date(value: str) -> common_pb2.Date | None:
    text = value.strip()
    for pattern in _DATE_RES:
        match = pattern.match(text)
        if match is None:
            continue
        parts = match.groupdict()
        year = int(parts.get("y") or 0)
        month, day = int(parts["m"]), int(parts["d"])
        if 1 <= month <= 12 and 1 <= day <= 31:
            return common_pb2.Date(year=year, month=month, day=day)
    return None


# IM ids: IMPP URI schemes and X- properties -> ImId.kind
_IM_SCHEMES = {
    "msnim": "msn",
    "ymsgr": "yahoo",
    "weixin": "wechat",
    "jabber": "xmpp",
    "gtalk": "gtalk",
}
_IM_PROPERTIES = {
    "X-QQ": "qq",
    "X-MSN": "msn",
    "X-SKYPE": "skype",
    "X-SKYPE-USERNAME": "skype",
    "X-WECHAT": "wechat",
    "X-AIM": "aim",
    "X-ICQ": "icq",
    "X-YAHOO": "yahoo",
    "X-JABBER": "xmpp",
    "X-GOOGLE-TALK": "gtalk",
    "X-GTALK": "gtalk",
}


def _impp(value: str, service_type: str) -> common_pb2.ImId | None:
    scheme, sep, rest = value.strip().partition(":")
    if not sep:
        scheme, rest = "", value.strip()
    if "contact=" in rest:
        rest = rest.split("contact=", 1)[1].split("&", 1)[0]
    rest = rest.lstrip("/")
    kind = service_type.lower() or _IM_SCHEMES.get(scheme.lower(), scheme.lower())
    if not rest or not kind:
        return None
    return common_pb2.ImId(kind=kind, id=rest)


# --------------------------------------------------------------------------------------
# vCard
# --------------------------------------------------------------------------------------


def _is_marker(line: bytes, marker: bytes) -> bool:
    return line[:1] not in (b" ", b"\t") and line.strip().upper() == marker


def _property_name(line: bytes) -> bytes:
    head = re.split(rb"[;:]", line.lstrip(), maxsplit=1)[0]
    return head.rsplit(b".", 1)[-1].strip().upper()


def _split_vcards(data: bytes) -> Iterator[tuple[int, int, bytes | None, str]]:
    """Yield ``(index, line, raw, problem)`` per card (``raw`` None = skipped) and stray text."""
    index = 0
    start: int | None = None
    start_line = 0
    depth = 0
    previous_name = b""
    stray_reported = False
    offset = len(_BOM) if data.startswith(_BOM) else 0
    for number, line in enumerate(data[offset:].splitlines(keepends=True), start=1):
        here = offset
        offset += len(line)
        if _is_marker(line, b"BEGIN:VCARD"):
            if depth and previous_name == b"AGENT":  # vCard 2.1 nested card
                depth += 1
                continue
            if depth:
                yield index, start_line, None, "no END:VCARD before the next BEGIN:VCARD"
                index += 1
            start, start_line, depth, stray_reported = here, number, 1, False
            previous_name = b"BEGIN"
            continue
        if _is_marker(line, b"END:VCARD") and depth:
            depth -= 1
            if depth == 0 and start is not None:
                yield index, start_line, data[start:offset], ""
                index += 1
                start = None
            continue
        if depth == 0:
            if line.strip() and not stray_reported:
                yield -1, number, None, "text outside BEGIN:VCARD/END:VCARD ignored"
                stray_reported = True
            continue
        if line[:1] not in (b" ", b"\t"):
            previous_name = _property_name(line)
    if depth:
        yield index, start_line, None, "no END:VCARD at the end of the file"


def read_vcards(data: bytes) -> ParseResult:
    """Read every vCard of a file's bytes (3.0 and 4.0; 2.1 leniently)."""
    result = ParseResult()
    ids = _Ids()
    for index, line, raw, problem in _split_vcards(data):
        if raw is None:
            result.issues.append(ParseIssue(None if index < 0 else index, line, problem))
            continue
        if len(raw) > MAX_RAW_BYTES:
            reason = f"{len(raw)} bytes; the server keeps at most {MAX_RAW_BYTES} per entry"
            result.issues.append(ParseIssue(index, line, reason))
            continue
        try:
            contact, uid = _parse_vcard(raw, line)
        except _Malformed as err:
            result.issues.append(ParseIssue(index, line, str(err)))
            continue
        result.entries.append(_entry(raw, VCARD_MEDIA_TYPE, contact, uid, ids))
    return result


class _Malformed(ValueError):
    pass


def _split_escaped(value: str, separator: str) -> list[str]:
    """Split on ``separator`` unless backslash-escaped; escapes are kept."""
    parts: list[str] = []
    current: list[str] = []
    chars = iter(value)
    for ch in chars:
        if ch == "\\":
            current.append(ch)
            current.append(next(chars, ""))
        elif ch == separator:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    return parts


_UNESCAPES = {"n": "\n", "N": "\n", ",": ",", ";": ";", "\\": "\\", ":": ":"}


def _unescape(value: str) -> str:
    return re.sub(r"\\(.)", lambda m: _UNESCAPES.get(m.group(1), m.group(1)), value)


def _components(value: str) -> list[str]:
    """Structured value (N, ADR, ORG): each component unescaped, its list joined by ", "."""
    return [
        ", ".join(p for p in (_unescape(v).strip() for v in _split_escaped(c, ",")) if p)
        for c in _split_escaped(value, ";")
    ]


@dataclass
class _Property:
    name: str
    params: dict[str, list[str]]
    value: str

    @property
    def types(self) -> set[str]:
        return {t.strip().lower() for v in self.params.get("TYPE", ()) for t in v.split(",")}

    @property
    def preferred(self) -> bool:
        return "pref" in self.types or "PREF" in self.params

    @property
    def text(self) -> str:
        return _unescape(self.value).strip()


def _params(raw: list[list[str]]) -> dict[str, list[str]]:
    params: dict[str, list[str]] = {}
    for item in raw:
        if len(item) == 1:  # vCard 2.1: TEL;CELL;HOME:...
            params.setdefault("TYPE", []).append(item[0])
        else:
            params.setdefault(item[0].upper(), []).extend(item[1:])
    return params


def _decoded_value(value: str, params: dict[str, list[str]]) -> str:
    encoding = [e.lower() for e in params.get("ENCODING", ())]
    if "quoted-printable" in encoding:
        charset = (params.get("CHARSET") or ["utf-8"])[0]
        payload = quopri.decodestring(value.encode("latin-1", errors="replace"))
        try:
            return payload.decode(charset, errors="replace")
        except LookupError:
            return payload.decode("utf-8", errors="replace")
    return value


def _properties(text: str, first_line: int) -> Iterator[_Property]:
    depth = 0
    for line, number in vobject_base.getLogicalLines(io.StringIO(text)):
        try:
            name, raw_params, value, _group = vobject_base.parseLine(line, number)
        except vobject_base.ParseError:
            shown = line if len(line) <= 40 else line[:37] + "..."
            raise _Malformed(f"line {first_line + number - 1}: cannot parse {shown!r}") from None
        upper = name.upper()
        if upper == "BEGIN":
            depth += 1
            continue
        if upper == "END":
            depth -= 1
            continue
        if depth != 1:
            continue  # a nested (AGENT) card
        params = _params(raw_params)
        yield _Property(upper, params, _decoded_value(value, params))


def _phone(prop: _Property) -> tuple[bool, common_pb2.PhoneNumber] | None:
    number = prop.text
    if number.lower().startswith("tel:"):
        number = number[4:]
    if not number:
        return None
    types = prop.types
    mobile = bool(types & {"cell", "mobile", "iphone"})
    if mobile:
        kind = common_pb2.PHONE_NUMBER_TYPE_MOBILE
    elif "fax" in types:
        kind = common_pb2.PHONE_NUMBER_TYPE_FAX
    elif "pager" in types:
        kind = common_pb2.PHONE_NUMBER_TYPE_OTHER
    else:
        kind = common_pb2.PHONE_NUMBER_TYPE_FIXED_LINE
    label = next((t for t in ("home", "work", "main", "other") if t in types), "")
    return mobile, common_pb2.PhoneNumber(raw=number, type=kind, label=label)


def _address(prop: _Property) -> common_pb2.PostalAddress:
    parts = (_components(prop.value) + [""] * 7)[:7]
    pobox, extended, street, locality, region, code, country = parts
    street_lines = ", ".join(p for p in (pobox, extended, street) if p)
    label = _unescape((prop.params.get("LABEL") or [""])[0]).strip()
    formatted = label or ", ".join(p for p in (street_lines, locality, region, code, country) if p)
    region_code = country.upper() if len(country) == 2 and country.isalpha() else ""
    return common_pb2.PostalAddress(
        formatted=formatted,
        street=street_lines,
        locality=locality,
        administrative_area=region,
        postal_code=code,
        region_code=region_code,
    )


def _is_picture_uri(value: str) -> bool:
    return re.match(r"^(https?|data):", value, re.IGNORECASE) is not None


def _parse_vcard(raw: bytes, first_line: int) -> tuple[common_pb2.Contact, str]:
    text = _decode(raw)
    if text is None:
        raise _Malformed("neither UTF-8 nor GB18030 text")
    contact = common_pb2.Contact()
    uid = ""
    companies: list[str] = []
    titles: list[str] = []
    addresses: list[_Property] = []
    names: list[str] = []
    for prop in _properties(text, first_line):
        name = prop.name
        if name == "FN":
            contact.display_name = contact.display_name or prop.text
        elif name == "N":
            family, given = [*_components(prop.value), "", ""][:2]
            contact.family_name, contact.given_name = family, given
            names = [given, family]
        elif name == "UID":
            uid = prop.text
        elif name == "TEL":
            phone = _phone(prop)
            if phone is not None:
                mobile, number = phone
                (contact.mobile_numbers if mobile else contact.fixed_numbers).append(number)
        elif name == "EMAIL":
            address = prop.text.removeprefix("mailto:")
            if address:
                label = next((t for t in ("home", "work", "other") if t in prop.types), "")
                contact.email_addresses.append(common_pb2.EmailAddress(raw=address, label=label))
        elif name == "IMPP":
            service = (prop.params.get("X-SERVICE-TYPE") or [""])[0]
            im = _impp(prop.text, service)
            if im is not None:
                contact.im_ids.append(im)
        elif name in _IM_PROPERTIES:
            if prop.text:
                contact.im_ids.append(common_pb2.ImId(kind=_IM_PROPERTIES[name], id=prop.text))
        elif name == "ORG":
            companies.append((_components(prop.value) or [""])[0])
        elif name == "TITLE":
            titles.append(prop.text)
        elif name == "BDAY":
            date = _parse_date(prop.text)
            if date is not None:
                contact.birthday.CopyFrom(date)
        elif name == "URL":
            if prop.text:
                contact.homepage_urls.append(prop.text)
        elif name == "ADR":
            addresses.append(prop)
        elif name == "PHOTO":
            value = prop.value.strip()  # a URI: not unescaped (data: URIs hold commas)
            if not contact.picture_uri and _is_picture_uri(value):
                contact.picture_uri = value
    if not contact.display_name and names:
        contact.display_name = _display_name(*names)
    for i in range(max(len(companies), len(titles))):
        company = companies[i] if i < len(companies) else ""
        title = titles[i] if i < len(titles) else ""
        if company or title:
            contact.organizations.append(common_pb2.Organization(company=company, job_title=title))
    if addresses:
        chosen = next((a for a in addresses if a.preferred), addresses[0])
        contact.address.CopyFrom(_address(chosen))
    return contact, uid


# --------------------------------------------------------------------------------------
# CSV
# --------------------------------------------------------------------------------------

_CSV_COLUMNS: dict[str, tuple[str, ...]] = {
    "display_name": ("name", "fullname", "displayname", "fn", "姓名"),
    "given_name": ("givenname", "firstname", "given", "名"),
    "family_name": ("familyname", "lastname", "surname", "family", "姓"),
    "mobile": ("mobile", "mobilephone", "cell", "cellphone", "手机"),
    "phone": (
        "phone",
        "telephone",
        "tel",
        "homephone",
        "workphone",
        "landline",
        "fixed",
        "fixedphone",
        "otherphone",
        "电话",
    ),
    "fax": ("fax", "传真"),
    "email": ("email", "emailaddress", "mail", "邮箱", "电子邮件"),
    "company": ("company", "organization", "organisation", "org", "公司"),
    "title": ("title", "jobtitle", "position", "职位"),
    "birthday": ("birthday", "bday", "dateofbirth", "dob", "生日"),
    "homepage": ("homepage", "url", "website", "webpage", "web", "主页"),
    "address": ("address", "homeaddress", "adr", "地址"),
    "im": ("im",),
    "uid": ("uid", "id", "entryid"),
}
_CSV_IM_KINDS = {
    "qq": "qq",
    "msn": "msn",
    "skype": "skype",
    "wechat": "wechat",
    "weixin": "wechat",
    "微信": "wechat",
    "icq": "icq",
    "aim": "aim",
    "yahoo": "yahoo",
    "xmpp": "xmpp",
    "jabber": "xmpp",
}
_CSV_ALIASES = {alias: key for key, aliases in _CSV_COLUMNS.items() for alias in aliases}


def _column_key(header: str) -> str:
    return re.sub(r"[\s_\-]+", "", header.strip().lower())


def _csv_records(data: bytes) -> Iterator[tuple[int, bytes]]:
    """Yield ``(first line number, record bytes without the final line break)``."""
    offset = len(_BOM) if data.startswith(_BOM) else 0
    lines: list[bytes] = []
    in_quotes = False
    first = 1
    for number, line in enumerate(data[offset:].splitlines(keepends=True), start=1):
        if not lines:
            first = number
        lines.append(line)
        if line.count(b'"') % 2:
            in_quotes = not in_quotes
        if not in_quotes:
            yield first, _chomp(b"".join(lines))
            lines = []
    if lines:
        yield first, b"".join(lines)


def _chomp(record: bytes) -> bytes:
    if record.endswith(b"\r\n"):
        return record[:-2]
    return record[:-1] if record.endswith((b"\n", b"\r")) else record


def _csv_fields(text: str) -> list[str]:
    rows = list(csv.reader(io.StringIO(text, newline=""), strict=True))
    return rows[0] if rows else []


def read_csv(data: bytes) -> ParseResult:
    """Read a CSV file's bytes: a header row, then one contact per record."""
    result = ParseResult()
    text_encoding = "utf-8" if _decode_strict(data, "utf-8") else "gb18030"
    ids = _Ids()
    columns: list[tuple[str, str]] | None = None  # (key, original header) per column
    index = 0
    for line, raw in _csv_records(data):
        if not raw.strip():
            continue
        try:
            fields = _csv_fields(raw.decode(text_encoding))
        except (UnicodeDecodeError, csv.Error) as err:
            if columns is None:
                result.issues.append(ParseIssue(None, line, f"unreadable header: {err}"))
                return result
            result.issues.append(ParseIssue(index, line, f"unreadable row: {err}"))
            index += 1
            continue
        if columns is None:
            columns = [(_csv_key(h), h.strip()) for h in fields]
            result.ignored_columns = [h for k, h in columns if not k and h]
            continue
        contact, uid = _csv_contact(columns, fields)
        if contact is None:
            result.issues.append(ParseIssue(index, line, "no contact data in the row"))
        elif len(raw) > MAX_RAW_BYTES:
            reason = f"{len(raw)} bytes; the server keeps at most {MAX_RAW_BYTES} per entry"
            result.issues.append(ParseIssue(index, line, reason))
        else:
            result.entries.append(_entry(raw, CSV_MEDIA_TYPE, contact, uid, ids))
        index += 1
    if columns is None:
        result.issues.append(ParseIssue(None, 1, "no header row"))
    return result


def _decode_strict(data: bytes, encoding: str) -> bool:
    try:
        data.decode(encoding)
    except UnicodeDecodeError:
        return False
    return True


def _csv_key(header: str) -> str:
    key = _column_key(header)
    if key in _CSV_IM_KINDS:
        return "im:" + _CSV_IM_KINDS[key]
    return _CSV_ALIASES.get(key, "")


def _csv_contact(
    columns: list[tuple[str, str]], fields: list[str]
) -> tuple[common_pb2.Contact | None, str]:
    contact = common_pb2.Contact()
    uid = ""
    companies: list[str] = []
    titles: list[str] = []
    addresses: list[str] = []
    for (key, _header), value in zip(columns, fields, strict=False):
        value = value.strip()
        if not key or not value:
            continue
        if key == "display_name":
            contact.display_name = contact.display_name or value
        elif key == "given_name":
            contact.given_name = contact.given_name or value
        elif key == "family_name":
            contact.family_name = contact.family_name or value
        elif key == "mobile":
            contact.mobile_numbers.append(
                common_pb2.PhoneNumber(raw=value, type=common_pb2.PHONE_NUMBER_TYPE_MOBILE)
            )
        elif key in ("phone", "fax"):
            kind = (
                common_pb2.PHONE_NUMBER_TYPE_FAX
                if key == "fax"
                else common_pb2.PHONE_NUMBER_TYPE_FIXED_LINE
            )
            contact.fixed_numbers.append(common_pb2.PhoneNumber(raw=value, type=kind))
        elif key == "email":
            contact.email_addresses.append(common_pb2.EmailAddress(raw=value))
        elif key == "company":
            companies.append(value)
        elif key == "title":
            titles.append(value)
        elif key == "birthday":
            date = _parse_date(value)
            if date is not None:
                contact.birthday.CopyFrom(date)
        elif key == "homepage":
            contact.homepage_urls.append(value)
        elif key == "address":
            addresses.append(value)
        elif key == "im":
            im_kind, sep, ident = value.partition(":")
            if sep and im_kind and ident:
                contact.im_ids.append(common_pb2.ImId(kind=im_kind.strip().lower(), id=ident))
        elif key.startswith("im:"):
            contact.im_ids.append(common_pb2.ImId(kind=key[3:], id=value))
        elif key == "uid":
            uid = value
    if not contact.display_name and (contact.given_name or contact.family_name):
        contact.display_name = _display_name(contact.given_name, contact.family_name)
    for i in range(max(len(companies), len(titles))):
        contact.organizations.append(
            common_pb2.Organization(
                company=companies[i] if i < len(companies) else "",
                job_title=titles[i] if i < len(titles) else "",
            )
        )
    if addresses:
        contact.address.formatted = addresses[0]
    has_data = contact.ListFields()
    return (contact if has_data else None), uid


# --------------------------------------------------------------------------------------
# Export
# --------------------------------------------------------------------------------------


def _is_vcard(entry: sync_pb2.AddressBookEntry) -> bool:
    media = entry.raw_media_type.split(";", 1)[0].strip().lower()
    return media in (VCARD_MEDIA_TYPE, "text/x-vcard", "text/directory") and bool(entry.raw)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace(",", "\\,").replace(";", "\\;").replace("\n", "\\n")


def _fold(line: str) -> bytes:
    """One content line, folded at 75 octets without splitting a UTF-8 sequence."""
    out = bytearray()
    width = 0
    for ch in line:
        encoded = ch.encode("utf-8")
        if width + len(encoded) > 75:
            out += b"\r\n "
            width = 1
        out += encoded
        width += len(encoded)
    return bytes(out) + b"\r\n"


def _date_text(date: common_pb2.Date) -> str:
    if date.year:
        return f"{date.year:04d}-{date.month:02d}-{date.day:02d}"
    return f"--{date.month:02d}{date.day:02d}"


def contact_to_vcard(contact: common_pb2.Contact, uid: str = "") -> bytes:
    """A vCard 3.0 (CRLF, folded) for a contact that has no vCard ``raw`` of its own."""
    c = contact
    display = c.display_name or _display_name(c.given_name, c.family_name)
    lines = ["BEGIN:VCARD", "VERSION:3.0", f"FN:{_escape(display)}"]
    lines.append(f"N:{_escape(c.family_name)};{_escape(c.given_name)};;;")
    if uid:
        lines.append(f"UID:{_escape(uid)}")
    for number in c.mobile_numbers:
        lines.append(f"TEL;TYPE=CELL:{_escape(number.raw or number.e164)}")
    for number in c.fixed_numbers:
        kind = "FAX" if number.type == common_pb2.PHONE_NUMBER_TYPE_FAX else "VOICE"
        label = f",{number.label.upper()}" if number.label else ""
        lines.append(f"TEL;TYPE={kind}{label}:{_escape(number.raw or number.e164)}")
    for email in c.email_addresses:
        lines.append(f"EMAIL;TYPE=INTERNET:{_escape(email.raw or email.normalized)}")
    for im in c.im_ids:
        lines.append(f"IMPP:{_escape(im.kind)}:{_escape(im.id)}")
    for org in c.organizations:
        if org.company:
            lines.append(f"ORG:{_escape(org.company)}")
        if org.job_title:
            lines.append(f"TITLE:{_escape(org.job_title)}")
    if c.HasField("birthday") and c.birthday.month:
        lines.append(f"BDAY:{_date_text(c.birthday)}")
    for url in c.homepage_urls:
        lines.append(f"URL:{url}")
    if c.HasField("address"):
        a = c.address
        parts = ("", "", a.street, a.locality, a.administrative_area, a.postal_code, a.region_code)
        if not any(parts) and a.formatted:
            parts = ("", "", a.formatted, "", "", "", "")
        if any(parts):
            lines.append("ADR:" + ";".join(_escape(p) for p in parts))
    if c.picture_uri:
        lines.append(f"PHOTO;VALUE=uri:{c.picture_uri}")
    lines.append("END:VCARD")
    return b"".join(_fold(line) for line in lines)


def write_vcards(entries: Iterable[sync_pb2.AddressBookEntry]) -> bytes:
    """A vCard file: each vCard entry's ``raw`` unchanged, other entries as new vCard 3.0.

    Entries read by :func:`read_vcards` come back byte for byte.
    """
    out = bytearray()
    for entry in entries:
        if entry.deleted:
            continue
        if _is_vcard(entry):
            out += entry.raw
            if not entry.raw.endswith((b"\n", b"\r")):
                out += b"\r\n"
        else:
            out += contact_to_vcard(entry.contact, entry.entry_id)
    return bytes(out)


_CSV_EXPORT_SINGLE = ("name", "given_name", "family_name")


def write_csv(entries: Iterable[sync_pb2.AddressBookEntry]) -> bytes:
    """A UTF-8 CSV (CRLF) of the parsed contacts, readable by :func:`read_csv`.

    Columns: uid, name, given_name, family_name, then as many ``mobile``, ``phone``, ``fax``,
    ``email``, ``company``/``title``, ``homepage`` and ``im`` columns as the fullest contact
    needs, then birthday and address.
    """
    rows = [e for e in entries if not e.deleted]
    contacts = [e.contact for e in rows]

    def most(values: Iterable[int]) -> int:
        return max(values, default=0)

    fax = common_pb2.PHONE_NUMBER_TYPE_FAX
    n_mobile = most(len(c.mobile_numbers) for c in contacts)
    n_phone = most(sum(1 for p in c.fixed_numbers if p.type != fax) for c in contacts)
    n_fax = most(sum(1 for p in c.fixed_numbers if p.type == fax) for c in contacts)
    n_email = most(len(c.email_addresses) for c in contacts)
    n_org = most(len(c.organizations) for c in contacts)
    n_url = most(len(c.homepage_urls) for c in contacts)
    n_im = most(len(c.im_ids) for c in contacts)
    header = ["uid", *_CSV_EXPORT_SINGLE]
    header += ["mobile"] * n_mobile + ["phone"] * n_phone + ["fax"] * n_fax
    header += ["email"] * n_email + ["company", "title"] * n_org + ["homepage"] * n_url
    header += ["im"] * n_im + ["birthday", "address"]

    def padded(values: list[str], n: int) -> list[str]:
        return values + [""] * (n - len(values))

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(header)
    for entry, c in zip(rows, contacts, strict=True):
        row = [entry.entry_id, c.display_name, c.given_name, c.family_name]
        row += padded([p.raw or p.e164 for p in c.mobile_numbers], n_mobile)
        row += padded([p.raw or p.e164 for p in c.fixed_numbers if p.type != fax], n_phone)
        row += padded([p.raw or p.e164 for p in c.fixed_numbers if p.type == fax], n_fax)
        row += padded([e.raw or e.normalized for e in c.email_addresses], n_email)
        orgs = [v for o in c.organizations for v in (o.company, o.job_title)]
        row += padded(orgs, 2 * n_org)
        row += padded(list(c.homepage_urls), n_url)
        row += padded([f"{im.kind}:{im.id}" for im in c.im_ids], n_im)
        birthday = _date_text(c.birthday) if c.HasField("birthday") and c.birthday.month else ""
        row += [birthday, c.address.formatted if c.HasField("address") else ""]
        writer.writerow(row)
    return buffer.getvalue().encode("utf-8")
