"""The synthetic population: deterministic, formats normalise to the intended E.164, and the
book structure matches the configuration."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter

import numpy as np
import pytest

from befriend.clients.population import Population, PopulationConfig
from befriend.core.normalize import Status, normalize_many

CONFIG = PopulationConfig(members=20_000, seed=7)


@pytest.fixture(scope="module")
def pop() -> Population:
    return Population(CONFIG)


def test_deterministic_by_seed(pop: Population) -> None:
    again = Population(CONFIG)
    assert [pop.member(i) for i in range(50)] == [again.member(i) for i in range(50)]
    assert pop.book(3, 200) == again.book(3, 200)
    assert [e.SerializeToString() for e in pop.entries(5, 40)] == [
        e.SerializeToString() for e in again.entries(5, 40)
    ]
    o1, c1 = pop.bulk_book_indices(range(100), 30)
    o2, c2 = again.bulk_book_indices(range(100), 30)
    assert (o1 == o2).all() and (c1 == c2).all()
    other = Population(PopulationConfig(members=20_000, seed=8))
    assert [other.key(i) for i in range(50)] != [pop.key(i) for i in range(50)]


def test_numbers_are_unique_and_vectorised_keys_agree(pop: Population) -> None:
    keys = pop.keys(np.arange(CONFIG.members + CONFIG.pool))
    assert len(set(keys.tolist())) == keys.size
    sample = range(0, CONFIG.members + CONFIG.pool, 97)
    assert pop.keys(list(sample)).tolist() == [pop.key(i) for i in sample]
    rows = list(pop.identity_rows(10, 20))
    assert rows == [(pop.user_id(i), pop.e164(i), pop.key(i)) for i in range(10, 20)]
    assert all(len(uid) == 32 for uid, _, _ in rows)


def test_country_mix(pop: Population) -> None:
    counts = Counter(pop.country_of(i).region for i in range(CONFIG.members))
    for region, share in CONFIG.countries:
        assert abs(counts[region] / CONFIG.members - share) < 0.01


def test_member_numbers_are_valid_mobiles(pop: Population) -> None:
    members = list(pop.members(0, 2000))
    by_region: dict[str, list[str]] = {}
    for m in members:
        by_region.setdefault(m.region, []).append(m.e164)
    for region, numbers in by_region.items():
        batch = normalize_many(numbers, region)
        assert list(batch.e164) == numbers
        assert (batch.status == Status.OK).all()
    assert 0.25 < sum(m.email is not None for m in members) / len(members) < 0.35


def test_book_formats_normalise_to_intended_e164(pop: Population) -> None:
    shapes: Counter[str] = Counter()
    owners_seen = set()
    for owner in range(0, CONFIG.members, 101):
        region = pop.country_of(owner).region
        owners_seen.add(region)
        book = pop.book(owner, 60)
        batch = normalize_many([c.raw for c in book], region)
        assert list(batch.e164) == [c.e164 for c in book], region
        for c in book:
            if c.raw.startswith(("17951", "17911", "12593")):
                shapes["ip"] += 1
            if c.raw.startswith("0086"):
                shapes["0086"] += 1
            if " " in c.raw or "-" in c.raw:
                shapes["separators"] += 1
    assert owners_seen == {"CN", "HK", "US", "GB"}
    assert shapes["ip"] and shapes["0086"] and shapes["separators"]


def test_entries_carry_vcard_and_parsed_contact(pop: Population) -> None:
    book = pop.book(11, 30)
    entries = pop.entries(11, 30)
    assert len({e.entry_id for e in entries}) == 30
    for bc, e in zip(book, entries, strict=True):
        assert e.raw_media_type == "text/vcard"
        text = e.raw.decode()
        assert text.startswith("BEGIN:VCARD\r\n") and f"TEL;TYPE=CELL:{bc.raw}\r\n" in text
        assert e.contact.display_name == bc.display_name
        assert [p.raw for p in e.contact.mobile_numbers] == [bc.raw]


def test_book_structure_member_and_reciprocity_ratios(pop: Population) -> None:
    size = 1000
    book = pop.book(42, size)
    assert len({c.index for c in book}) == size
    members = [c for c in book if c.is_member]
    assert abs(len(members) / size - CONFIG.member_share) < 0.02
    assert abs(sum(c.reciprocal for c in members) / len(members) - CONFIG.reciprocal_share) < 0.03
    assert 42 not in {c.index for c in book}
    # Reciprocity holds in the population itself: books of equal size hold each other; a
    # one-way contact holds the owner back only by rare chance (a random far pick).
    mine = pop.key(42)
    rec = [c for c in members if c.reciprocal][:40]
    one_way = [c for c in members if not c.reciprocal][:40]
    assert all(mine in {x.key for x in pop.book(c.index, size)} for c in rec)
    back = sum(mine in {x.key for x in pop.book(c.index, size)} for c in one_way)
    assert back <= 0.1 * len(one_way)


def test_bulk_books_have_the_configured_shape(pop: Population) -> None:
    size = 30
    n = CONFIG.members
    owners, contacts = pop.bulk_book_indices(range(n), size)
    assert owners.size == contacts.size == n * size
    is_member = contacts < CONFIG.members
    assert abs(is_member.mean() - CONFIG.member_share) < 0.02
    holds = set(zip(owners.tolist(), contacts.tolist(), strict=True))
    member_pairs = [(o, c) for o, c in holds if c < n]
    reciprocal = sum((c, o) in holds for o, c in member_pairs) / len(member_pairs)
    assert abs(reciprocal - CONFIG.reciprocal_share) < 0.05


def test_clients_do_not_import_the_server() -> None:
    code = (
        "import sys, befriend.clients.population; "
        "print([m for m in sys.modules if m.startswith('befriend.server')])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
