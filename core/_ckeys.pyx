# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Identity extraction and entry-key rows of uploaded address-book entries (compiled).

Same API and results as the reference ``befriend.core._pykeys`` (which documents the
semantics): ``contact_identities`` scans a serialised contact's wire bytes,
``upload_entries`` the entries of a serialised upload request, and ``key_rows`` builds the
entry_keys rows of a chunk in one pass over its identity columns.
"""

import numpy as np

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.unicode cimport PyUnicode_DecodeUTF8
from libc.stdint cimport int64_t, uint8_t, uint64_t

from befriend.core._pykeys import MAX_VALUE_CHARS, ContactLayout, EntryLayout, KeyRow, WireError

ctypedef uint64_t u64
ctypedef int64_t i64

cdef Py_ssize_t C_MAX_VALUE_CHARS = MAX_VALUE_CHARS


cdef inline Py_ssize_t _varint(const uint8_t *d, Py_ssize_t pos, Py_ssize_t end,
                               u64 *out) except -1:
    cdef u64 value = 0
    cdef int shift = 0
    cdef uint8_t b
    while True:
        if pos >= end or shift > 63:
            raise WireError("truncated or overlong varint")
        b = d[pos]
        pos += 1
        value |= (<u64>(b & 0x7F)) << shift
        if b < 0x80:
            out[0] = value
            return pos
        shift += 7


cdef inline Py_ssize_t _skip(const uint8_t *d, Py_ssize_t pos, Py_ssize_t end,
                             int wire) except -1:
    cdef u64 n
    if wire == 0:
        return _varint(d, pos, end, &n)
    if wire == 1:
        pos += 8
    elif wire == 2:
        pos = _varint(d, pos, end, &n)
        if n > <u64>(end - pos):
            raise WireError("field runs past the end of the message")
        pos += <Py_ssize_t>n
    elif wire == 5:
        pos += 4
    else:
        raise WireError(f"unsupported wire type {wire}")
    if pos > end:
        raise WireError("field runs past the end of the message")
    return pos


cdef inline Py_ssize_t _span(const uint8_t *d, Py_ssize_t pos, Py_ssize_t end,
                             Py_ssize_t *stop) except -1:
    """The start of the length-delimited value whose length is at ``pos``; its end in
    ``stop``."""
    cdef u64 n
    pos = _varint(d, pos, end, &n)
    if n > <u64>(end - pos):
        raise WireError("field runs past the end of the message")
    stop[0] = pos + <Py_ssize_t>n
    return pos


cdef tuple _strings(const uint8_t *d, Py_ssize_t pos, Py_ssize_t end, u64 a, u64 b):
    cdef object va = "", vb = ""
    cdef u64 tag, field
    cdef Py_ssize_t stop
    cdef int wire
    while pos < end:
        pos = _varint(d, pos, end, &tag)
        field = tag >> 3
        wire = <int>(tag & 7)
        if wire == 2 and (field == a or field == b):
            pos = _span(d, pos, end, &stop)
            text = PyUnicode_DecodeUTF8(<const char *>d + pos, stop - pos, NULL)
            pos = stop
            if field == a:
                va = text
            if field == b:
                vb = text
        else:
            pos = _skip(d, pos, end, wire)
    return (va, vb)


def contact_identities(bytes data not None, layout):
    cdef u64 mobile = layout.mobile, fixed = layout.fixed
    cdef u64 email = layout.email, im = layout.im
    cdef u64 phone_raw = layout.phone_raw, email_raw = layout.email_raw
    cdef u64 im_kind = layout.im_kind, im_id = layout.im_id
    cdef tuple flag_fields = tuple(layout.flag_fields)
    cdef Py_ssize_t nflags = len(flag_fields), i
    cdef u64 flag_numbers[16]
    if nflags > 16:
        raise ValueError("at most 16 flag fields")
    for i in range(nflags):
        flag_numbers[i] = flag_fields[i]
    cdef const uint8_t *d = <const uint8_t *>PyBytes_AS_STRING(data)
    cdef Py_ssize_t pos = 0, end = PyBytes_GET_SIZE(data), stop
    cdef u64 tag, field
    cdef int wire
    cdef long flags = 0
    cdef list mobiles = [], fixeds = [], emails = [], ims = []
    while pos < end:
        pos = _varint(d, pos, end, &tag)
        field = tag >> 3
        wire = <int>(tag & 7)
        for i in range(nflags):
            if field == flag_numbers[i]:
                flags |= 1 << i
        if wire != 2:
            pos = _skip(d, pos, end, wire)
            continue
        pos = _span(d, pos, end, &stop)
        if field == mobile:
            mobiles.append(_strings(d, pos, stop, phone_raw, <u64>-1)[0])
        elif field == fixed:
            fixeds.append(_strings(d, pos, stop, phone_raw, <u64>-1)[0])
        elif field == email:
            emails.append(_strings(d, pos, stop, email_raw, <u64>-1)[0])
        elif field == im:
            ims.append(_strings(d, pos, stop, im_kind, im_id))
        pos = stop
    if fixeds:
        mobiles.extend(fixeds)
    return tuple(mobiles), tuple(emails), tuple(ims), flags


def upload_entries(bytes data not None, layout, contact, make, Py_ssize_t small):
    cdef u64 f_entries = layout.entries, f_id = layout.entry_id, f_raw = layout.raw
    cdef u64 f_media = layout.media_type, f_contact = layout.contact
    cdef u64 f_hash = layout.content_hash, f_deleted = layout.deleted
    cdef const uint8_t *d = <const uint8_t *>PyBytes_AS_STRING(data)
    cdef const char *c = <const char *>d
    cdef Py_ssize_t pos = 0, end = PyBytes_GET_SIZE(data), stop, value_end, n_
    cdef u64 tag, field, value
    cdef int wire
    cdef list made = [], notes = []
    cdef list parts
    cdef object entry_id, raw, media_type, content_hash, body
    cdef bint deleted
    while pos < end:
        pos = _varint(d, pos, end, &tag)
        field = tag >> 3
        wire = <int>(tag & 7)
        if field != f_entries or wire != 2:
            pos = _skip(d, pos, end, wire)
            continue
        pos = _span(d, pos, end, &stop)
        entry_id = media_type = content_hash = ""
        raw = b""
        body = None
        parts = None
        deleted = False
        while pos < stop:
            pos = _varint(d, pos, stop, &tag)
            field = tag >> 3
            wire = <int>(tag & 7)
            if wire == 0 and field == f_deleted:
                pos = _varint(d, pos, stop, &value)
                deleted = value != 0
                continue
            if wire != 2 or not (field == f_id or field == f_raw or field == f_media
                                 or field == f_contact or field == f_hash):
                pos = _skip(d, pos, stop, wire)
                continue
            pos = _span(d, pos, stop, &value_end)
            n_ = value_end - pos
            if field == f_raw:
                raw = PyBytes_FromStringAndSize(c + pos, n_)
            elif field == f_contact:
                if body is None:
                    body = PyBytes_FromStringAndSize(c + pos, n_)
                else:  # given twice: the records concatenated (a parser merges them)
                    if parts is None:
                        parts = [body]
                    parts.append(PyBytes_FromStringAndSize(c + pos, n_))
            elif field == f_id:
                entry_id = PyUnicode_DecodeUTF8(c + pos, n_, NULL)
            elif field == f_media:
                media_type = PyUnicode_DecodeUTF8(c + pos, n_, NULL)
            else:
                content_hash = PyUnicode_DecodeUTF8(c + pos, n_, NULL).lower()
            pos += n_
        if parts is not None:
            body = b"".join(parts)
        elif body is None:
            body = b""
        phones, emails, ims, flagged = contact_identities(body, contact)
        if flagged or PyBytes_GET_SIZE(body) > small:
            notes.append((len(made), flagged))
        made.append(
            make(entry_id, raw, media_type, content_hash, body, phones, emails, ims, deleted)
        )
    return made, notes


cdef inline object _signed(u64 key):
    if key == 0:
        return None
    return <i64>key


cdef bint _listed(list rows, Py_ssize_t first, long kind, object value):
    cdef Py_ssize_t r
    cdef tuple row
    for r in range(first, len(rows)):
        row = <tuple>rows[r]
        if <long>row[2] == kind and row[5] == value:
            return True
    return False


def key_rows(
    str user_id,
    entry_pks,
    long phone_kind,
    phone_owner,
    phone_ok,
    phone_key,
    phone_weak,
    phone_e164,
    phone_raw,
    other_owner,
    other_kind,
    other_key,
    other_value,
):
    cdef const i64[:] p_owner = np.ascontiguousarray(phone_owner, dtype=np.int64)
    cdef const uint8_t[:] p_ok = np.ascontiguousarray(phone_ok, dtype=bool).view(np.uint8)
    cdef const u64[:] p_key = np.ascontiguousarray(phone_key, dtype=np.uint64)
    cdef const u64[:] p_weak = np.ascontiguousarray(phone_weak, dtype=np.uint64)
    cdef const i64[:] o_owner = np.ascontiguousarray(other_owner, dtype=np.int64)
    cdef const i64[:] o_kind = np.ascontiguousarray(other_kind, dtype=np.int64)
    cdef const u64[:] o_key = np.ascontiguousarray(other_key, dtype=np.uint64)
    cdef list pks = list(entry_pks)
    cdef list e164 = list(phone_e164), raws = list(phone_raw), values = list(other_value)
    cdef Py_ssize_t np_ = p_owner.shape[0], no = o_owner.shape[0], n = len(pks)
    if p_ok.shape[0] != np_ or p_key.shape[0] != np_ or p_weak.shape[0] != np_:
        raise ValueError("phone columns differ in length")
    if len(e164) != np_ or len(raws) != np_:
        raise ValueError("phone columns differ in length")
    if o_kind.shape[0] != no or o_key.shape[0] != no or len(values) != no:
        raise ValueError("identity columns differ in length")
    cdef Py_ssize_t j
    for j in range(np_):
        if p_owner[j] < 0 or p_owner[j] >= n or (j and p_owner[j] < p_owner[j - 1]):
            raise ValueError("owner index out of range" if p_owner[j] < 0 or p_owner[j] >= n
                             else "owners must be non-decreasing")
    for j in range(no):
        if o_owner[j] < 0 or o_owner[j] >= n or (j and o_owner[j] < o_owner[j - 1]):
            raise ValueError("owner index out of range" if o_owner[j] < 0 or o_owner[j] >= n
                             else "owners must be non-decreasing")
    cdef list rows = []
    cdef Py_ssize_t i, p = 0, o = 0, first
    cdef object pk, value, key, weak
    cdef bint ok
    cdef long kind
    for i in range(n):
        pk = pks[i]
        first = len(rows)
        live = pk >= 0
        while p < np_ and p_owner[p] == i:
            ok = p_ok[p] != 0
            if live and (ok or p_weak[p] != 0):
                if ok:
                    value = e164[p]
                else:
                    value = raws[p]
                    if len(value) > C_MAX_VALUE_CHARS:
                        value = value[:C_MAX_VALUE_CHARS]
                if not _listed(rows, first, phone_kind, value):
                    key = _signed(p_key[p]) if ok else None
                    weak = _signed(p_weak[p])
                    rows.append((pk, user_id, phone_kind, key, weak, value, len(rows) - first))
            p += 1
        while o < no and o_owner[o] == i:
            if live:
                kind = o_kind[o]
                value = values[o]
                if not _listed(rows, first, kind, value):
                    rows.append((pk, user_id, kind, _signed(o_key[o]), None, value,
                                 len(rows) - first))
            o += 1
    return rows
