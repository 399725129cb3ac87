"""Synthetic population for load tests and benchmarks (deterministic by seed).

A population of ``members`` registered users, numbered 0..members-1, and a pool of
non-members numbered members..members+nonmember_pool-1. Every index has one phone number:

- the country is drawn from ``countries`` (default mostly CN mobiles 13x-19x, some HK
  5/6/9xxxxxxx, US and GB mobiles) by a hash of (seed, index);
- the national number is a bijection of the index inside that country's number space
  (prefix list x body digits), so two indices never share a number and no set of used
  numbers is needed; ``number_space()`` says how many indices each country can hold.

Address books (``book``): of a member's ``size`` contacts, ``member_share`` are members and
``reciprocal_share`` of those hold the owner back. Reciprocal contacts are the owner's ring
neighbours (owner +-1, +-2, ... mod members), which is symmetric whenever both sides use the
same book size; the other member contacts are drawn from the far side of the ring (offsets in
[members/4, 3*members/4]) so they do not hold the owner back except by rare chance; the
rest are drawn from the non-member pool (shared between books, as real phone books are).
Numbers are written as people write them, for the owner's region: national, 3-4-4 with
spaces or dashes, +86 / 0086 / (+86), CN IP-dial prefixes (17951, 17911, 12593), HK with and
without 852, US (xxx) xxx-xxxx, GB 07xxx xxxxxx, dial-out 00 / 011 for foreign numbers.
Each ``BookContact`` carries the E.164 its raw string must normalise to.

``bulk_book_indices`` draws the same structure for many owners at once (numpy) for bulk
loading; ``identity_rows`` / ``member_keys`` give (user_id, e164, key) rows.

This module imports only numpy and the generated protos (clients never import the server).
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from befriend.v1 import common_pb2, sync_pb2

__all__ = [
    "BookContact",
    "Country",
    "Member",
    "Population",
    "PopulationConfig",
    "vcard",
]

_M64 = (1 << 64) - 1


@dataclass(frozen=True)
class Country:
    """A country's mobile number space: ``prefixes`` (national digits) x ``body`` digits."""

    region: str
    calling_code: int
    prefixes: tuple[str, ...]
    body: int  # digits after the prefix
    dial_out: str  # international prefix used when dialling out from this region

    @property
    def space(self) -> int:
        return len(self.prefixes) * int(10**self.body)

    @property
    def national_digits(self) -> int:
        return len(self.prefixes[0]) + self.body


_CN_PREFIXES = tuple(
    str(p)
    for p in (
        *range(130, 140),
        145,
        147,
        150,
        151,
        152,
        153,
        155,
        156,
        157,
        158,
        159,
        166,
        172,
        173,
        175,
        176,
        177,
        178,
        *range(180, 190),
        191,
        193,
        195,
        196,
        197,
        198,
        199,
    )
)
_HK_PREFIXES = tuple(
    [f"5{i:02d}" for i in (10, 12, 13, 16, 20, 23, 30, 32, 40, 42, 50, 52, 60, 62, 90, 92)]
    + [f"{a}{b}" for a in ("61", "63", "64", "65", "69", "94", "96", "97") for b in "0123456789"]
)
_US_PREFIXES = tuple(
    f"{area}{x}"
    for area in ("212", "415", "650", "312", "617", "646", "917", "718", "213", "310")
    for x in "23456789"
)
_GB_PREFIXES = tuple(
    f"7{i}" for i in (*range(40, 60), *range(71, 91), *range(92, 100))
)  # 074x-075x, 0771-0790, 0792-0799

CN = Country("CN", 86, _CN_PREFIXES, 8, "00")
HK = Country("HK", 852, _HK_PREFIXES, 5, "001")
US = Country("US", 1, _US_PREFIXES, 6, "011")
GB = Country("GB", 44, _GB_PREFIXES, 7, "00")
COUNTRIES: dict[str, Country] = {c.region: c for c in (CN, HK, US, GB)}

IP_PREFIXES = ("17951", "17911", "12593")
_SURNAMES = (
    "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董潘袁蔡蒋余于杜叶程"
)
_GIVEN = "伟芳娜敏静丽强磊军洋勇艳杰娟涛明超秀霞平刚桂英华玉兰萍红鹏飞宇浩然欣怡子涵梓轩"
_FIRST = [
    "James",
    "Mary",
    "John",
    "Patricia",
    "Robert",
    "Jennifer",
    "Michael",
    "Linda",
    "David",
    "Elizabeth",
    "William",
    "Susan",
    "Richard",
    "Jessica",
    "Joseph",
    "Sarah",
    "Thomas",
    "Karen",
    "Oliver",
    "Amelia",
    "George",
    "Isla",
    "Harry",
    "Ava",
    "Jack",
    "Emily",
]
_LAST = [
    "Smith",
    "Johnson",
    "Williams",
    "Brown",
    "Jones",
    "Garcia",
    "Miller",
    "Davis",
    "Wilson",
    "Taylor",
    "Anderson",
    "Thomas",
    "Jackson",
    "White",
    "Harris",
    "Martin",
    "Thompson",
    "Evans",
    "Walker",
    "Wright",
    "Roberts",
    "Green",
    "Hall",
    "Wood",
]
_MAIL_DOMAINS = ("example.com", "example.net", "example.org", "mail.example.cn")


def _mix(x: int) -> int:
    """splitmix64 finaliser: a well-spread 64-bit hash of an integer."""
    x = (x + 0x9E3779B97F4A7C15) & _M64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _M64
    return x ^ (x >> 31)


def _mix_array(x: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint64]:
    """``_mix`` over a uint64 array (numpy integer arrays wrap around silently)."""
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


@dataclass(frozen=True)
class PopulationConfig:
    members: int = 1_000_000
    seed: int = 20261123
    nonmember_pool: int = 0  # 0: twice the members
    member_share: float = 0.35  # of a book's contacts
    reciprocal_share: float = 0.40  # of a book's member contacts
    email_share: float = 0.30  # members with an e-mail address
    ip_prefix_share: float = 0.05  # CN mobiles written with an IP-dial prefix (CN owners)
    countries: tuple[tuple[str, float], ...] = (
        ("CN", 0.85),
        ("HK", 0.07),
        ("US", 0.04),
        ("GB", 0.04),
    )

    @property
    def pool(self) -> int:
        return self.nonmember_pool or 2 * self.members


@dataclass(frozen=True)
class Member:
    index: int
    user_id: str
    region: str
    e164: str
    key: int  # the E.164 digits as an integer (the server's phone identity key)
    display_name: str
    email: str | None


@dataclass(frozen=True)
class BookContact:
    """One phone-book entry: who it is and how the owner wrote the number."""

    index: int  # population index (< members: a member)
    is_member: bool
    reciprocal: bool  # a member contact who holds the owner back
    display_name: str
    raw: str  # the number as written in the book
    e164: str  # what ``raw`` normalises to under the owner's region
    key: int
    email: str | None = None


@dataclass
class Population:
    config: PopulationConfig = field(default_factory=PopulationConfig)

    def __post_init__(self) -> None:
        c = self.config
        if c.members < 8:
            raise ValueError("a population needs at least 8 members")
        regions = [r for r, _ in c.countries]
        unknown = [r for r in regions if r not in COUNTRIES]
        if unknown:
            raise ValueError(f"no number plan for {unknown}; have {sorted(COUNTRIES)}")
        self._countries = [COUNTRIES[r] for r in regions]
        weights = np.array([w for _, w in c.countries], dtype=np.float64)
        self._cum = np.cumsum(weights / weights.sum())
        self._cum[-1] = 1.0
        total = c.members + c.pool
        for country in self._countries:
            if total > country.space:
                raise ValueError(f"{total:,} indices exceed {country.region}'s {country.space:,}")
        # Per-country bijection of the index: x = (i * a + b) mod space, gcd(a, space) = 1.
        self._affine: list[tuple[int, int]] = []
        for k, country in enumerate(self._countries):
            a = _mix(c.seed * 31 + k) % country.space | 1
            while math.gcd(a, country.space) != 1:
                a += 2
            self._affine.append((a, _mix(c.seed * 37 + k) % country.space))
        self._prefix_ints = [
            np.array([int(p) for p in country.prefixes], dtype=np.uint64)
            for country in self._countries
        ]

    # -- numbers -------------------------------------------------------------------------
    def __len__(self) -> int:
        return self.config.members

    def _hash(self, i: int, salt: int) -> int:
        return _mix((self.config.seed << 40) ^ (salt << 32) ^ i)

    def country_of(self, i: int) -> Country:
        return self._countries[self._country_slot(i)]

    def national(self, i: int) -> tuple[Country, str]:
        """The country and national significant number of index ``i``."""
        k = self._country_slot(i)
        country = self._countries[k]
        a, b = self._affine[k]
        x = (i * a + b) % country.space
        prefix, body = divmod(x, 10**country.body)
        return country, f"{country.prefixes[prefix]}{body:0{country.body}d}"

    def _country_slot(self, i: int) -> int:
        u = (self._hash(i, 1) >> 11) / float(1 << 53)
        return int(np.searchsorted(self._cum, u, side="right"))

    def key(self, i: int) -> int:
        country, nsn = self.national(i)
        return int(f"{country.calling_code}{nsn}")

    def e164(self, i: int) -> str:
        return f"+{self.key(i)}"

    def keys(self, indices: npt.ArrayLike) -> npt.NDArray[np.uint64]:
        """Phone keys of many indices at once (same values as ``key``)."""
        idx = np.asarray(indices, dtype=np.uint64)
        salt = np.uint64(((self.config.seed << 40) ^ (1 << 32)) & _M64)
        u = (_mix_array(idx ^ salt) >> np.uint64(11)).astype(np.float64) / float(1 << 53)
        slot = np.searchsorted(self._cum, u, side="right")
        out = np.zeros(idx.shape, dtype=np.uint64)
        for k, country in enumerate(self._countries):
            sel = slot == k
            if not sel.any():
                continue
            a, b = self._affine[k]
            # (i * a + b) mod space without overflow: i < 2**23 typical, but use Python ints
            # per element only if the product could exceed 2**64.
            ii = idx[sel]
            if int(ii.max()) * a + b < 1 << 64:
                x = (ii * np.uint64(a) + np.uint64(b)) % np.uint64(country.space)
            else:
                x = np.array(
                    [(int(v) * a + b) % country.space for v in ii.tolist()], dtype=np.uint64
                )
            body = np.uint64(10**country.body)
            nsn = self._prefix_ints[k][(x // body).astype(np.intp)] * body + x % body
            out[sel] = np.uint64(country.calling_code * 10**country.national_digits) + nsn
        return out

    def number_space(self) -> dict[str, int]:
        return {c.region: c.space for c in self._countries}

    # -- members -------------------------------------------------------------------------
    def user_id(self, i: int) -> str:
        return f"{self.config.seed & 0xFFFFFFFF:08x}{i:024x}"

    def display_name(self, i: int) -> str:
        h = self._hash(i, 2)
        if self.country_of(i).region in ("CN", "HK"):
            given = _GIVEN[(h >> 8) % len(_GIVEN)]
            if h & 1:
                given += _GIVEN[(h >> 16) % len(_GIVEN)]
            return _SURNAMES[h % len(_SURNAMES)] + given
        return f"{_FIRST[h % len(_FIRST)]} {_LAST[(h >> 8) % len(_LAST)]}"

    def email(self, i: int) -> str | None:
        h = self._hash(i, 3)
        if (h >> 11) / float(1 << 53) >= self.config.email_share:
            return None
        return f"user{i}.{h % 1000:03d}@{_MAIL_DOMAINS[(h >> 20) % len(_MAIL_DOMAINS)]}"

    def member(self, i: int) -> Member:
        if not 0 <= i < self.config.members:
            raise IndexError(i)
        key = self.key(i)
        return Member(
            i,
            self.user_id(i),
            self.country_of(i).region,
            f"+{key}",
            key,
            self.display_name(i),
            self.email(i),
        )

    def members(self, start: int = 0, stop: int | None = None) -> Iterator[Member]:
        for i in range(start, self.config.members if stop is None else stop):
            yield self.member(i)

    def member_keys(self, start: int = 0, stop: int | None = None) -> npt.NDArray[np.uint64]:
        return self.keys(np.arange(start, self.config.members if stop is None else stop))

    def identity_rows(
        self, start: int = 0, stop: int | None = None
    ) -> Iterator[tuple[str, str, int]]:
        """(user_id, phone E.164, key) for members ``start..stop`` (bulk loading)."""
        stop = self.config.members if stop is None else stop
        seed_hex = f"{self.config.seed & 0xFFFFFFFF:08x}"
        for base in range(start, stop, 65536):
            top = min(stop, base + 65536)
            for i, key in zip(
                range(base, top), self.keys(np.arange(base, top)).tolist(), strict=True
            ):
                yield f"{seed_hex}{i:024x}", f"+{key}", key

    # -- address books -------------------------------------------------------------------
    def book_shape(self, size: int) -> tuple[int, int, int]:
        """(reciprocal members, one-way members, non-members) in a book of ``size``."""
        c = self.config
        n_mem = min(round(size * c.member_share), c.members // 2)
        n_rec = min(round(n_mem * c.reciprocal_share), (c.members // 4) * 2)
        return n_rec, n_mem - n_rec, size - n_mem

    def book(self, owner: int, size: int) -> list[BookContact]:
        """``owner``'s phone book of ``size`` contacts, in book order."""
        c = self.config
        n = c.members
        rnd = random.Random(self._hash(owner, 4))
        n_rec, n_one, n_non = self.book_shape(size)
        picks: list[tuple[int, bool]] = []
        d = 1
        while len(picks) < n_rec:
            picks.append(((owner + d) % n, True))
            if len(picks) < n_rec:
                picks.append(((owner - d) % n, True))
            d += 1
        picks += [((owner + o) % n, False) for o in rnd.sample(range(n // 4, 3 * n // 4), n_one)]
        picks += [(n + j, False) for j in rnd.sample(range(c.pool), n_non)]
        rnd.shuffle(picks)
        owner_region = self.country_of(owner).region
        out = []
        for i, rec in picks:
            country, nsn = self.national(i)
            is_member = i < n
            key = int(f"{country.calling_code}{nsn}")
            email = self.email(i) if is_member else None
            out.append(
                BookContact(
                    i,
                    is_member,
                    rec,
                    self.display_name(i),
                    render(country, nsn, owner_region, rnd, c.ip_prefix_share),
                    f"+{key}",
                    key,
                    email if email and rnd.random() < 0.5 else None,
                )
            )
        return out

    def entries(self, owner: int, size: int) -> list[sync_pb2.AddressBookEntry]:
        """``book(owner, size)`` as upload entries: raw = a small vCard, contact parsed."""
        return [to_entry(f"c{j:06d}", bc) for j, bc in enumerate(self.book(owner, size))]

    def bulk_book_indices(
        self, owners: Sequence[int] | npt.NDArray[np.int64], size: int
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        """(owner, contact index) pairs of many books of the same ``size``, drawn with the
        structure of ``book`` (ring neighbours reciprocal, far ring members one-way, pool
        non-members) by numpy in bulk; rows grouped by owner. Random picks are not
        deduplicated within a book (collisions are ~size**2 / pool, negligible)."""
        c = self.config
        n = c.members
        own = np.asarray(owners, dtype=np.int64)
        first = int(own[0]) if own.size else 0
        rng = np.random.default_rng([c.seed, 5, first, own.size])
        n_rec, n_one, n_non = self.book_shape(size)
        half = np.arange(1, n_rec // 2 + 2, dtype=np.int64)
        ring = np.empty(2 * half.size, dtype=np.int64)
        ring[0::2], ring[1::2] = half, -half
        ring = ring[:n_rec]
        rec = (own[:, None] + ring[None, :]) % n
        one = (own[:, None] + rng.integers(n // 4, 3 * n // 4, (own.size, n_one))) % n
        non = n + rng.integers(0, c.pool, (own.size, n_non))
        contacts = np.concatenate([rec, one, non], axis=1)
        return np.repeat(own, size), contacts.reshape(-1)


def render(country: Country, nsn: str, owner_region: str, rnd: random.Random, ip: float) -> str:
    """The national number ``nsn`` of ``country`` as someone in ``owner_region`` writes it."""
    home = COUNTRIES.get(owner_region)
    out = home.dial_out if home else "00"
    r = rnd.random()
    if country.region == "CN":
        spaced = f"{nsn[:3]} {nsn[3:7]} {nsn[7:]}"
        dashed = f"{nsn[:3]}-{nsn[3:7]}-{nsn[7:]}"
        if owner_region == "CN":
            if r < ip:
                return rnd.choice(IP_PREFIXES) + rnd.choice(("", " ")) + nsn
            r = (r - ip) / (1 - ip)
            if r < 0.35:
                return nsn
            if r < 0.50:
                return spaced
            if r < 0.60:
                return dashed
            if r < 0.75:
                return f"+86 {spaced}"
            if r < 0.85:
                return f"+86{nsn}"
            if r < 0.93:
                return rnd.choice((f"0086 {nsn}", f"0086-{dashed}"))
            return f"(+86) {dashed}"
        if r < 0.6:
            return rnd.choice((f"+86 {spaced}", f"+86{nsn}", f"+86-{dashed}"))
        return f"{out} 86 {spaced}" if r < 0.8 else f"{out}86{nsn}"
    if country.region == "HK":
        spaced = f"{nsn[:4]} {nsn[4:]}"
        if owner_region == "HK":
            if r < 0.6:
                return rnd.choice((spaced, nsn))
            return rnd.choice((f"+852 {spaced}", f"+852{nsn}"))
        if r < 0.5:
            return rnd.choice((f"+852 {spaced}", f"+852{nsn}"))
        if owner_region == "CN" and r < 0.7:
            return f"852 {spaced}"
        return f"{out}852 {spaced}"
    if country.region == "US":
        area, exch, line = nsn[:3], nsn[3:6], nsn[6:]
        if owner_region == "US":
            if r < 0.8:
                return rnd.choice((f"({area}) {exch}-{line}", f"{area}-{exch}-{line}", f"1{nsn}"))
            return f"+1 {area}-{exch}-{line}"
        if r < 0.6:
            return rnd.choice((f"+1 ({area}) {exch}-{line}", f"+1{nsn}"))
        return f"{out}1{nsn}" if r < 0.8 else f"{out} 1 {area} {exch} {line}"
    # GB
    spaced = f"{nsn[:4]} {nsn[4:]}"
    if owner_region == "GB":
        if r < 0.7:
            return f"0{spaced}" if r < 0.5 else f"0{nsn}"
        return f"+44 {spaced}"
    if r < 0.6:
        return rnd.choice((f"+44 {spaced}", f"+44{nsn}"))
    return f"{out} 44 {spaced}" if r < 0.8 else f"{out}44{nsn}"


def vcard(name: str, phone: str, email: str | None = None) -> str:
    lines = ["BEGIN:VCARD", "VERSION:3.0", f"FN:{name}", f"TEL;TYPE=CELL:{phone}"]
    if email:
        lines.append(f"EMAIL;TYPE=INTERNET:{email}")
    lines.append("END:VCARD")
    return "\r\n".join(lines) + "\r\n"


def to_entry(entry_id: str, bc: BookContact) -> sync_pb2.AddressBookEntry:
    contact = common_pb2.Contact(display_name=bc.display_name)
    contact.mobile_numbers.add(raw=bc.raw)
    if bc.email:
        contact.email_addresses.add(raw=bc.email)
    return sync_pb2.AddressBookEntry(
        entry_id=entry_id,
        raw=vcard(bc.display_name, bc.raw, bc.email).encode(),
        raw_media_type="text/vcard",
        contact=contact,
    )
