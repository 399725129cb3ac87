"""Seed 000's field-level two-way merge with provenance (pure domain engine).

A contact is a plain JSON document shaped like ``MessageToDict(Contact,
preserving_proto_field_name=True)`` (absent key = empty). Every value of it lives in a *slot*
(``"remark"``, ``"mobile_numbers[1]"``, ``"organizations[0].job_title"`` …) whose provenance
(:class:`Prov`) says who owns it: the device it was uploaded from, a merge that added it as a
*new addition* (seed 000 Table 2), the user who edited it, or the member's own profile.
:func:`plan` computes what a merge copies from one side into the other (and, on re-sync, what
earlier unmodified additions it replaces or removes), :func:`apply` writes a plan, :func:`undo`
is the seed's deletion (only unmodified new additions go), :func:`edit` is the seed's
modification (an edited addition becomes owned data), :func:`replace_owned` takes a new
version of one owner's data (device re-upload, profile change) without losing the others'.
Provenance is stored as ``dict[slot, Prov]``; slots absent from it count as a caller-given
default, so a plain device upload costs no provenance storage at all.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias
from urllib.parse import urlsplit, urlunsplit

from befriend.core.normalize import Status, email_key, im_key, normalize

__all__ = [
    "EDITABLE_FIELDS",
    "LIST_FIELDS",
    "SCALAR_FIELDS",
    "Addition",
    "Doc",
    "Op",
    "Prov",
    "Provs",
    "Source",
    "UndoCounts",
    "apply",
    "changed_fields",
    "edit",
    "is_empty",
    "keys",
    "plan",
    "provs_from_json",
    "provs_to_json",
    "replace_owned",
    "slots",
    "undo",
]

Doc: TypeAlias = dict[str, Any]

# Proto field order of Contact; scalars hold one slot, lists one slot per item.
FIELDS: tuple[str, ...] = (
    "display_name",
    "given_name",
    "family_name",
    "remark",
    "picture_uri",
    "mobile_numbers",
    "email_addresses",
    "fixed_numbers",
    "homepage_urls",
    "address",
    "organizations",
    "birthday",
    "im_ids",
)
LIST_FIELDS = frozenset(
    {
        "mobile_numbers",
        "email_addresses",
        "fixed_numbers",
        "homepage_urls",
        "organizations",
        "im_ids",
    }
)
SCALAR_FIELDS = frozenset(FIELDS) - LIST_FIELDS
EDITABLE_FIELDS = frozenset(FIELDS)
_TITLE = "job_title"
_SLOT = re.compile(r"^([a-z_]+)\[(\d+)\](?:\.([a-z_]+))?$")

PHONE_KIND, EMAIL_KIND, IM_KIND = 1, 2, 3


class Source(enum.IntEnum):
    """Who owns a slot's value (numbers are the proto FieldSource values)."""

    DEVICE = 1
    NETWORK_MERGE = 2
    USER_EDIT = 3
    PROFILE = 4


@dataclass(frozen=True)
class Prov:
    """Provenance of one slot: owner, merge id (additions and edited additions), device, time
    (epoch microseconds)."""

    source: Source
    merge: str = ""
    device_id: str = ""
    time: int = 0


Provs: TypeAlias = dict[str, Prov]
ProvsIn: TypeAlias = Mapping[str, Prov] | None


class Op(enum.StrEnum):
    """What an addition does to its slot."""

    ADD = "add"
    REPLACE = "replace"
    REMOVE = "remove"


@dataclass(frozen=True)
class Addition:
    """One planned write: ``value`` goes to ``slot`` of top-level ``field`` (None for REMOVE).
    ``old`` is what the planner saw there (the replaced/removed item or value; for a job-title
    sub-slot the organization item), used by :func:`apply` to find the slot again and check
    that it still holds a merge's unmodified value."""

    field: str
    slot: str
    op: Op
    value: Any = None
    old: Any = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"field": self.field, "slot": self.slot, "op": self.op.value}
        if self.value is not None:
            out["value"] = self.value
        if self.old is not None:
            out["old"] = self.old
        return out

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> Addition:
        field, slot = obj["field"], obj["slot"]
        if field not in EDITABLE_FIELDS or not isinstance(slot, str):
            raise ValueError(f"bad addition: {obj!r}")
        return cls(field, slot, Op(obj["op"]), obj.get("value"), obj.get("old"))


@dataclass(frozen=True)
class UndoCounts:
    """Result counts of :func:`undo` (UndoMergeResponse's field counts)."""

    removed: int
    kept_modified: int


# ---------------------------------------------------------------------------------------------
# values, identities


def _canon(v: Any) -> Any:
    """The MessageToDict form of a value: empty strings/zeros/False/empty containers dropped."""
    if type(v) is dict:
        out = {}
        for k, x in v.items():
            c = _canon(x)
            if not _empty(c):
                out[k] = c
        return out
    if type(v) is list:
        return [_canon(x) for x in v]
    return v


def _val(v: Any) -> Any:
    """A top-level field value in canonical form, None when empty (absent = empty)."""
    return None if _empty(v) else _canon(v)


def _empty(v: Any) -> bool:
    t = type(v)
    if t is str or t is list:
        return not v
    if t is dict:
        return all(_empty(x) for x in v.values())
    return v is None or v is False or (isinstance(v, int) and v == 0)


def _digits(s: str) -> str:
    return "".join(ch for ch in s if ch.isdigit())


def _phone_e164(raw: str, region: str) -> str:
    r = normalize(raw, region)
    return r.e164 if r.status == Status.OK else ""


def _phone_key(item: Mapping[str, Any], region: str) -> str:
    e = str(item.get("e164", "") or "")
    if e:
        return e
    raw = str(item.get("raw", "") or "")
    return _phone_e164(raw, region) or "raw:" + (_digits(raw) or raw.strip())


def _email_norm(raw: str) -> str:
    s = raw.strip()
    if s[:7].lower() == "mailto:":
        s = s[7:].strip()
    try:
        return email_key(s)[0]
    except ValueError:
        return s


def _url_norm(u: str) -> str:
    s = u.strip()
    try:
        p = urlsplit(s if "://" in s else "http://" + s)
    except ValueError:
        return s.lower().rstrip("/")
    return urlunsplit((p.scheme.lower(), p.netloc.lower(), p.path.rstrip("/"), p.query, p.fragment))


def _im_norm(kind: str, ident: str) -> str:
    try:
        return im_key(kind, ident)[0]
    except ValueError:
        return f"{kind.strip().lower()}:{ident.strip()}"


def _company_key(org: Mapping[str, Any]) -> str:
    return " ".join(str(org.get("company", "") or "").split()).casefold()


def _item_key(field: str, item: Any, region: str) -> str:
    """Identity of a list item: equal keys = the same number/address/id/company."""
    if field in ("mobile_numbers", "fixed_numbers"):
        return _phone_key(item, region)
    if field == "email_addresses":
        raw = str(item.get("raw", "") or "")
        return _email_norm(raw) if raw.strip() else str(item.get("normalized", "") or "")
    if field == "homepage_urls":
        return _url_norm(str(item))
    if field == "im_ids":
        return _im_norm(str(item.get("kind", "") or ""), str(item.get("id", "") or ""))
    return _company_key(item)


def _fill(field: str, item: Any, region: str) -> Any:
    """The canonical item a merge writes (standardised phone, normalised e-mail, trimmed URL)."""
    if field in ("mobile_numbers", "fixed_numbers"):
        out = dict(item)
        if not out.get("e164"):
            out["e164"] = _phone_e164(str(out.get("raw", "") or ""), region)
        return _canon(out)
    if field == "email_addresses":
        out = dict(item)
        if out.get("raw", "").strip():
            out["normalized"] = _email_norm(out["raw"])
        return _canon(out)
    if field == "homepage_urls":
        return str(item).strip()
    if field == "im_ids":
        kind, ident = str(item.get("kind", "") or ""), str(item.get("id", "") or "")
        return _canon({**item, "kind": kind.strip().lower(), "id": ident.strip()})
    return _canon(item)


def _person_name(doc: Mapping[str, Any]) -> str:
    name = str(doc.get("display_name", "") or "").strip()
    if name:
        return name
    parts = (str(doc.get(f, "") or "").strip() for f in ("given_name", "family_name"))
    return " ".join(p for p in parts if p)


def _most_recent(orgs: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """Seed 000 "the most recent company": current, else latest start date, else first."""
    if not orgs:
        return None
    for org in orgs:
        if org.get("current"):
            return org
    best, best_date = orgs[0], (0, 0, 0)
    for org in orgs:
        d = org.get("start_date") or {}
        date = (int(d.get("year", 0)), int(d.get("month", 0)), int(d.get("day", 0)))
        if date > best_date:
            best, best_date = org, date
    return best


def _is_merge(p: Prov | None) -> bool:
    return p is not None and p.source == Source.NETWORK_MERGE


def _items(doc: Mapping[str, Any], field: str) -> list[Any]:
    return list(doc.get(field) or [])


def _set(doc: Doc, field: str, value: Any) -> None:
    if _empty(value):
        doc.pop(field, None)
    else:
        doc[field] = value


# ---------------------------------------------------------------------------------------------
# slots and provenance storage


def _parse(slot: str) -> tuple[str, int, str]:
    m = _SLOT.match(slot)
    return (m.group(1), int(m.group(2)), m.group(3) or "") if m else (slot, -1, "")


def _drop_index(provs: Provs, field: str, idx: int) -> None:
    """Forget item ``idx`` of ``field`` (and its sub-slots); shift later items down."""
    moved: Provs = {}
    for slot in [s for s in provs if s.startswith(field + "[")]:
        f, i, sub = _parse(slot)
        p = provs.pop(slot)
        if f == field and i > idx:
            moved[f"{field}[{i - 1}]" + (f".{sub}" if sub else "")] = p
        elif f != field or i < idx:
            moved[slot] = p
    provs.update(moved)


def _prune(doc: Mapping[str, Any], provs: Provs) -> Provs:
    """Drop provenance of slots that hold no value (keeps the map aligned with the doc)."""
    live = {s for s, _ in slots(doc, provs, Prov(Source.DEVICE))}
    return {s: p for s, p in provs.items() if s in live}


def slots(doc: Mapping[str, Any], provs: ProvsIn, default: Prov) -> list[tuple[str, Prov]]:
    """Every non-empty slot of ``doc`` with its provenance, in proto field order (seed 000
    "remember per field where it came from"); slots missing from ``provs`` get ``default``.
    A job-title sub-slot is listed (after its organization) only when it has its own entry."""
    pm = provs or {}
    out: list[tuple[str, Prov]] = []
    for field in FIELDS:
        if field not in LIST_FIELDS:
            if not _empty(doc.get(field)):
                out.append((field, pm.get(field, default)))
            continue
        for i, item in enumerate(_items(doc, field)):
            slot = f"{field}[{i}]"
            out.append((slot, pm.get(slot, default)))
            sub = f"{slot}.{_TITLE}"
            if field == "organizations" and sub in pm and (item or {}).get(_TITLE):
                out.append((sub, pm[sub]))
    return out


def provs_to_json(provs: ProvsIn) -> dict[str, dict[str, Any]]:
    """Provenance as JSON: ``{slot: {"source": int, "merge"?, "device_id"?, "time"?}}``."""
    out: dict[str, dict[str, Any]] = {}
    for slot, p in (provs or {}).items():
        o: dict[str, Any] = {"source": int(p.source)}
        if p.merge:
            o["merge"] = p.merge
        if p.device_id:
            o["device_id"] = p.device_id
        if p.time:
            o["time"] = p.time
        out[slot] = o
    return out


def provs_from_json(obj: Any) -> Provs:
    """Inverse of :func:`provs_to_json`; None/empty gives an empty map. ValueError if malformed."""
    if not obj:
        return {}
    if not isinstance(obj, Mapping):
        raise ValueError("provenance must be a JSON object")
    out: Provs = {}
    for slot, o in obj.items():
        if not isinstance(slot, str) or not isinstance(o, Mapping):
            raise ValueError(f"bad provenance entry {slot!r}")
        try:
            out[slot] = Prov(
                Source(int(o["source"])),
                str(o.get("merge", "")),
                str(o.get("device_id", "")),
                int(o.get("time", 0)),
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"bad provenance entry {slot!r}") from exc
    return out


# ---------------------------------------------------------------------------------------------
# plan


def _plan_scalar(field: str, src: Any, tgt: Any, prov: Prov | None) -> list[Addition]:
    """Add into an empty slot; replace/remove a slot still owned by an earlier merge."""
    src, tgt = _val(src), _val(tgt)
    if _empty(tgt):
        return [] if _empty(src) else [Addition(field, field, Op.ADD, src)]
    if not _is_merge(prov) or src == tgt:
        return []
    if _empty(src):
        return [Addition(field, field, Op.REMOVE, None, tgt)]
    return [Addition(field, field, Op.REPLACE, src, tgt)]


def _plan_list(
    field: str,
    src_items: Sequence[Any],
    tgt_items: Sequence[Any],
    pm: Mapping[str, Prov],
    region: str,
) -> list[Addition]:
    """New items are appended; merged items whose value left the source are removed, those
    whose details (label, type) changed there are replaced."""
    wanted: dict[str, Any] = {}
    for item in src_items:
        wanted.setdefault(_item_key(field, item, region), _fill(field, item, region))
    have = [_item_key(field, it, region) for it in tgt_items]
    replaces: list[Addition] = []
    removes: list[Addition] = []
    for i, (k, item) in enumerate(zip(have, tgt_items, strict=True)):
        if not _is_merge(pm.get(f"{field}[{i}]")):
            continue
        if k not in wanted or k in have[:i]:
            removes.append(Addition(field, f"{field}[{i}]", Op.REMOVE, None, item))
        elif _canon(item) != wanted[k]:
            replaces.append(Addition(field, f"{field}[{i}]", Op.REPLACE, wanted[k], item))
    n = len(tgt_items) - len(removes)
    adds = []
    for k, value in wanted.items():
        if k not in have:
            adds.append(Addition(field, f"{field}[{n}]", Op.ADD, value))
            n += 1
    return replaces + removes[::-1] + adds


def _plan_orgs(
    src_orgs: Sequence[Mapping[str, Any]], tgt: Sequence[Mapping[str, Any]], pm: Mapping[str, Prov]
) -> list[Addition]:
    """Company and job title of the source's most recent company (seed 000 Table 2)."""
    f = "organizations"
    mr = _most_recent(src_orgs)
    mkey = _company_key(mr) if mr else ""
    value = _canon(dict(mr)) if mr and mkey else None
    title = str(mr.get(_TITLE, "") or "") if mr else ""
    match = next((i for i, o in enumerate(tgt) if mkey and _company_key(o) == mkey), None)
    pre: list[Addition] = []
    stale: list[int] = []
    for i, org in enumerate(tgt):
        slot, cur = f"{f}[{i}]", str(org.get(_TITLE, "") or "")
        sub, sub_prov = f"{slot}.{_TITLE}", pm.get(f"{slot}.{_TITLE}")
        if i != match:
            if _is_merge(pm.get(slot)):
                stale.append(i)
            elif _is_merge(sub_prov) and cur:
                pre.append(Addition(f, sub, Op.REMOVE, None, _canon(org)))
        elif _is_merge(pm.get(slot)):
            if _canon(org) != value:
                pre.append(Addition(f, slot, Op.REPLACE, value, _canon(org)))
        elif not cur and title:
            pre.append(Addition(f, sub, Op.ADD, title, _canon(org)))
        elif cur and _is_merge(sub_prov) and cur != title:
            op = Op.REPLACE if title else Op.REMOVE
            pre.append(Addition(f, sub, op, title or None, _canon(org)))
    adds = []
    if value is not None and match is None:
        if stale:
            i = stale.pop(0)
            pre.append(Addition(f, f"{f}[{i}]", Op.REPLACE, value, _canon(tgt[i])))
        else:
            adds.append(Addition(f, f"{f}[{len(tgt) - len(stale)}]", Op.ADD, value))
    removes = [Addition(f, f"{f}[{i}]", Op.REMOVE, None, _canon(tgt[i])) for i in stale]
    return pre + removes[::-1] + adds


def plan(
    source: Doc,
    target: Doc,
    target_provs: ProvsIn,
    *,
    region: str,
    include_picture: bool,
    new_contact: bool = False,
) -> list[Addition]:
    """Seed 000 Table 2: what a merge copies from ``source`` into ``target`` as new additions
    — the name as a remark (or, for a new contact / one whose name a merge wrote, as the name),
    the picture per user setting, standardised mobile numbers, recognised e-mail addresses,
    fixed numbers, homepage URLs, the address, the most recent company and the job title
    listed under it, the birthday and IM ids — only where the target lacks the value. On a
    re-sync, slots an earlier merge added and nobody modified since (NETWORK_MERGE) follow
    the source: changed values are replaced, values gone from the source are removed; device,
    profile and user-edited values are never touched. Deterministic field/slot order."""
    pm: Mapping[str, Prov] = target_provs or {}
    out: list[Addition] = []
    name = _person_name(source)
    dp = pm.get("display_name")
    as_name = new_contact or (
        dp is not None and dp.merge != "" and dp.source in (Source.NETWORK_MERGE, Source.USER_EDIT)
    )
    for field in FIELDS:
        tgt = target.get(field)
        if field in ("display_name", "given_name", "family_name"):
            if as_name:
                src = name if field == "display_name" else source.get(field)
                out += _plan_scalar(field, src, tgt, pm.get(field))
        elif field == "remark":
            if not as_name:
                out += _plan_scalar(field, name, tgt, pm.get(field))
        elif field == "picture_uri":
            if include_picture:
                out += _plan_scalar(field, source.get(field), tgt, pm.get(field))
        elif field == "organizations":
            out += _plan_orgs(_items(source, field), _items(target, field), pm)
        elif field in LIST_FIELDS:
            out += _plan_list(field, _items(source, field), _items(target, field), pm, region)
        else:
            out += _plan_scalar(field, source.get(field), tgt, pm.get(field))
    return out


# ---------------------------------------------------------------------------------------------
# apply / undo


def _locate(
    field: str, items: Sequence[Any], pm: Mapping[str, Prov], idx: int, old: Any, region: str
) -> int | None:
    """Index of the merged (NETWORK_MERGE) item the planner saw at ``idx``, wherever it is now."""
    if old is None:
        return None
    k = _item_key(field, old, region)
    order = [idx, *range(len(items))] if 0 <= idx < len(items) else range(len(items))
    for i in order:
        if _item_key(field, items[i], region) == k and _is_merge(pm.get(f"{field}[{i}]")):
            return i
    return None


def apply(
    target: Doc,
    provs: ProvsIn,
    additions: Sequence[Addition],
    *,
    merge: str,
    time: int,
    region: str = "",
) -> tuple[Doc, Provs]:
    """Seed 000 "synchronise … as a new addition": write a :func:`plan`; every written slot
    gets ``Prov(NETWORK_MERGE, merge, time=time)``. Additions whose precondition no longer
    holds (the value is already there, the slot was edited or re-owned since) are skipped,
    never duplicated. ``region`` reads phone numbers that have no E.164 form yet."""
    doc: Doc = dict(target)
    pm: Provs = dict(provs or {})
    mp = Prov(Source.NETWORK_MERGE, merge=merge, time=time)
    for a in additions:
        f, idx, sub = _parse(a.slot)
        if a.field not in EDITABLE_FIELDS or f != a.field:
            raise ValueError(f"bad addition slot {a.slot!r}")
        if a.field not in LIST_FIELDS:
            cur = _val(doc.get(f))
            writable = _empty(cur) or _is_merge(pm.get(f))
            if a.op is Op.REMOVE:
                if _is_merge(pm.get(f)) and cur == _val(a.old):
                    doc.pop(f, None)
                    pm.pop(f, None)
            elif writable and not _empty(a.value) and cur != _val(a.value):
                doc[f] = _canon(a.value)
                pm[f] = mp
            continue
        items = _items(doc, f)
        if sub:  # job title under an existing organization
            k = _item_key(f, a.old or {}, region)
            i = next((j for j, o in enumerate(items) if _item_key(f, o, region) == k), None)
            if i is None:
                continue
            slot, cur_title = f"{f}[{i}].{sub}", str(items[i].get(sub, "") or "")
            org = dict(items[i])
            if a.op is Op.ADD and not cur_title and a.value:
                org[sub] = a.value
                pm[slot] = mp
            elif a.op is not Op.ADD and _is_merge(pm.get(slot)) and cur_title != (a.value or ""):
                org.pop(sub, None)
                pm.pop(slot, None)
                if a.value:
                    org[sub], pm[slot] = a.value, mp
            items[i] = org
        elif a.op is Op.ADD:
            if _empty(a.value):
                continue
            k = _item_key(f, a.value, region)
            if any(_item_key(f, it, region) == k for it in items):
                continue
            pm[f"{f}[{len(items)}]"] = mp
            items.append(a.value)
        else:
            i = _locate(f, items, pm, idx, a.old, region)
            if i is None:
                continue
            if a.op is Op.REMOVE:
                del items[i]
                _drop_index(pm, f, i)
            else:
                k = _item_key(f, a.value, region)
                if any(_item_key(f, it, region) == k for j, it in enumerate(items) if j != i):
                    continue
                items[i] = a.value
                pm.pop(f"{f}[{i}].{_TITLE}", None)
                pm[f"{f}[{i}]"] = mp
        _set(doc, f, items)
    return doc, _prune(doc, pm)


def undo(doc: Doc, provs: ProvsIn, *, merge: str) -> tuple[Doc, Provs, UndoCounts]:
    """Seed 000 deletion: remove the new additions of ``merge`` that nobody modified (slots
    still NETWORK_MERGE with that merge id; a job-title addition clears just the title), keep
    the original values and the modified additions (USER_EDIT slots remembering ``merge``,
    counted as ``kept_modified``)."""
    out: Doc = dict(doc)
    pm: Provs = dict(provs or {})
    kept = sum(1 for p in pm.values() if p.source == Source.USER_EDIT and p.merge == merge)
    doomed = [s for s, p in pm.items() if _is_merge(p) and p.merge == merge]
    removed = 0
    # Sub-slots first, then items from the highest index down so indices stay valid.
    for slot in sorted(doomed, key=lambda s: (not _parse(s)[2], -_parse(s)[1], s)):
        f, idx, sub = _parse(slot)
        if slot not in pm:
            continue
        if idx < 0:
            if not _empty(out.get(f)):
                removed += 1
            out.pop(f, None)
            pm.pop(f, None)
            continue
        items = _items(out, f)
        if idx >= len(items):
            pm.pop(slot, None)
            continue
        removed += 1
        if sub:
            org = dict(items[idx])
            org.pop(sub, None)
            items[idx] = org
            pm.pop(slot)
        else:
            del items[idx]
            _drop_index(pm, f, idx)
        _set(out, f, items)
    return out, _prune(out, pm), UndoCounts(removed, kept)


# ---------------------------------------------------------------------------------------------
# user edits and owner re-uploads


def _pair(
    field: str, old: Sequence[Any], new: Sequence[Any], region: str
) -> tuple[list[int | None], list[bool]]:
    """For each new item: the old item it continues (exact value first, then identity) and
    whether it is unchanged."""
    used: set[int] = set()
    match: list[int | None] = [None] * len(new)
    same = [False] * len(new)
    old_c = [_canon(o) for o in old]
    for j, item in enumerate(new):
        c = _canon(item)
        i = next((i for i, o in enumerate(old_c) if i not in used and o == c), None)
        if i is not None:
            used.add(i)
            match[j], same[j] = i, True
    old_k = [_item_key(field, o, region) for o in old]
    for j, item in enumerate(new):
        if match[j] is None:
            k = _item_key(field, item, region)
            i = next((i for i, o in enumerate(old_k) if i not in used and o == k), None)
            if i is not None:
                used.add(i)
                match[j] = i
    return match, same


def _untitled(org: Mapping[str, Any]) -> Any:
    return _canon({**org, _TITLE: ""})


def edit(
    doc: Doc,
    provs: ProvsIn,
    changes: Doc,
    paths: Sequence[str],
    *,
    time: int,
    default: Prov,
    region: str = "",
) -> tuple[Doc, Provs, list[str]]:
    """Seed 000 modification: the user replaces the fields named in ``paths`` (an
    UpdateContact field mask of top-level names) by ``changes``' values. Changed or added slots
    become owned data, ``Prov(USER_EDIT)`` remembering the merge of a former addition;
    unchanged slots keep their provenance (an untouched addition stays removable); list items
    are matched by value, then by identity, across reordering. Returns the changed field
    names; ValueError(path) for a path that is not an editable field."""
    for path in paths:
        if path not in EDITABLE_FIELDS:
            raise ValueError(path)
    out: Doc = dict(doc)
    pm: Provs = dict(provs or {})

    def owned(p: Prov | None) -> Prov:
        p = p or default
        carried = p.merge if p.source in (Source.NETWORK_MERGE, Source.USER_EDIT) else ""
        return Prov(Source.USER_EDIT, merge=carried, time=time)

    fresh = Prov(Source.USER_EDIT, time=time)
    changed: list[str] = []
    for f in dict.fromkeys(paths):
        old, new = out.get(f), _val(changes.get(f))
        if _val(old) == new:
            continue
        changed.append(f)
        if f not in LIST_FIELDS:
            p = pm.pop(f, None)
            _set(out, f, new)
            if not _empty(new):
                pm[f] = fresh if _empty(old) else owned(p)
            continue
        old_items, new_items = _items(out, f), list(new or [])
        old_pm = {s: p for s, p in pm.items() if _parse(s)[0] == f and _parse(s)[1] >= 0}
        for s in old_pm:
            del pm[s]
        match, same = _pair(f, old_items, new_items, region)
        for j, i in enumerate(match):
            slot, sub = f"{f}[{j}]", f"{f}[{j}].{_TITLE}"
            if i is None:
                pm[slot] = fresh
                continue
            item_prov, sub_prov = old_pm.get(f"{f}[{i}]"), old_pm.get(f"{f}[{i}].{_TITLE}")
            if same[j]:
                pm.update({k: v for k, v in ((slot, item_prov), (sub, sub_prov)) if v})
                continue
            if sub_prov is None or _untitled(old_items[i]) != _untitled(new_items[j]):
                pm[slot] = owned(item_prov)
            elif item_prov:
                pm[slot] = item_prov
            if sub_prov and new_items[j].get(_TITLE):
                title_same = old_items[i].get(_TITLE) == new_items[j].get(_TITLE)
                pm[sub] = sub_prov if title_same else owned(sub_prov)
        _set(out, f, new_items)
    return out, _prune(out, pm), changed


def replace_owned(
    doc: Doc,
    provs: ProvsIn,
    fresh: Doc,
    *,
    source: Source,
    default: Prov,
    time: int,
    device_id: str = "",
    region: str = "",
) -> tuple[Doc, Provs, list[str]]:
    """Seed 000 "later changes flow both ways": a new version of the data ``source`` owns (a
    device re-upload, a member's changed profile) replaces every slot owned by ``source``
    (missing slots count as ``default``). Merge additions and user edits are kept even when
    ``fresh`` lacks them (the device may not have received them yet); when ``fresh`` holds the
    same value, one copy is kept with its existing provenance. A different fresh value wins
    over a merge addition, and over a user edit when ``source`` is DEVICE (the user edits on
    the device). Slots ``default`` already describes get no map entry, so plain uploads stay
    provenance-free. Returns the changed field names."""
    pm_in: Mapping[str, Prov] = provs or {}
    out: Doc = dict(doc)
    pm: Provs = {}
    fp = Prov(source, device_id=device_id, time=time)
    implicit = source == default.source and device_id in ("", default.device_id)

    def eff(slot: str) -> Prov:
        return pm_in.get(slot, default)

    def put(slot: str, p: Prov | None) -> None:
        if p is not None and p != default and slot:
            pm[slot] = p

    def mine(slot: str) -> None:
        if not implicit:
            pm[slot] = fp

    def yields(p: Prov) -> bool:  # a different fresh value replaces this non-owned one
        return p.source == Source.NETWORK_MERGE or (
            p.source == Source.USER_EDIT and source == Source.DEVICE
        )

    for f in FIELDS:
        if f not in LIST_FIELDS:
            cur, new, p = _val(out.get(f)), _val(fresh.get(f)), eff(f)
            if p.source == source or _empty(cur) or (not _empty(new) and new != cur and yields(p)):
                _set(out, f, new)
                if not _empty(new):
                    mine(f)
            else:
                put(f, pm_in.get(f))
            continue
        items = _items(out, f)
        new_items = [_canon(x) for x in _items(fresh, f)]
        owned_idx = [i for i in range(len(items)) if eff(f"{f}[{i}]").source == source]
        kept = {i: _item_key(f, items[i], region) for i in range(len(items)) if i not in owned_idx}
        # Merged job titles inside owned organizations survive a fresh copy lacking them.
        titles = {
            _item_key(f, items[i], region): (items[i].get(_TITLE, ""), pm_in[f"{f}[{i}].{_TITLE}"])
            for i in owned_idx
            if f == "organizations" and f"{f}[{i}].{_TITLE}" in pm_in
        }
        result: list[Any] = list(items)
        rprov: list[Prov | None] = [pm_in.get(f"{f}[{i}]") for i in range(len(items))]
        rsub: list[Prov | None] = [pm_in.get(f"{f}[{i}].{_TITLE}") for i in range(len(items))]
        placed: list[Any] = []
        for item in new_items:
            k = _item_key(f, item, region)
            hit = next((i for i, kk in kept.items() if kk == k), None)
            if hit is None:
                placed.append(item)
            elif _canon(items[hit]) != item and yields(eff(f"{f}[{hit}]")):
                result[hit], rsub[hit] = item, None
                rprov[hit] = None if implicit else fp
                del kept[hit]
        holes = list(owned_idx)
        for item in placed:
            sub_prov: Prov | None = None
            k = _item_key(f, item, region)
            if k in titles and titles[k][0]:
                title, tp = titles[k]
                if item.get(_TITLE) in (None, "", title) or not yields(tp):
                    item, sub_prov = {**item, _TITLE: title}, tp
            fresh_prov = None if implicit else fp
            if holes:
                i = holes.pop(0)
                result[i], rprov[i], rsub[i] = item, fresh_prov, sub_prov
            else:
                result.append(item)
                rprov.append(fresh_prov)
                rsub.append(sub_prov)
        for i in sorted(holes, reverse=True):
            del result[i], rprov[i], rsub[i]
        for j in range(len(result)):
            put(f"{f}[{j}]", rprov[j])
            put(f"{f}[{j}].{_TITLE}", rsub[j])
        _set(out, f, result)
    changed = changed_fields(doc, out)
    return out, _prune(out, pm), changed


# ---------------------------------------------------------------------------------------------
# helpers


def keys(doc: Mapping[str, Any], region: str) -> list[tuple[int, int, str]]:
    """The matching identities of a contact (seed 000 "match by number or e-mail", plus IM
    ids): (1, E.164 key, E.164) for mobile and fixed numbers, (2, key, address) for e-mail,
    (3, key, "kind:id") for IM ids; unnormalisable values are skipped, duplicates removed."""
    out: dict[tuple[int, int], str] = {}
    for field in ("mobile_numbers", "fixed_numbers"):
        for item in _items(doc, field):
            r = normalize(str(item.get("e164") or item.get("raw") or ""), region)
            if r.status == Status.OK:
                out.setdefault((PHONE_KIND, r.key), r.e164)
    for item in _items(doc, "email_addresses"):
        raw = str(item.get("raw") or item.get("normalized") or "").strip()
        raw = raw[7:] if raw[:7].lower() == "mailto:" else raw
        try:
            value, key = email_key(raw)
        except ValueError:
            continue
        out.setdefault((EMAIL_KIND, key), value)
    for item in _items(doc, "im_ids"):
        try:
            value, key = im_key(str(item.get("kind", "")), str(item.get("id", "")))
        except ValueError:
            continue
        out.setdefault((IM_KIND, key), value)
    return [(kind, key, value) for (kind, key), value in out.items()]


def changed_fields(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[str]:
    """Top-level contact fields whose values differ (absent = empty), in proto order."""
    return [
        f
        for f in FIELDS
        if (x := a.get(f)) is not (y := b.get(f)) and x != y and _val(x) != _val(y)
    ]


def is_empty(doc: Mapping[str, Any]) -> bool:
    """True when no contact field holds a value (output-only keys ignored)."""
    return all(_empty(doc.get(f)) for f in FIELDS)
