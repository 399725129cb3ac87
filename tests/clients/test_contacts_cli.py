"""`befriend contacts import/export` and `befriend books` against the fake server."""

from __future__ import annotations

from pathlib import Path

from befriend.clients.cli import device_id_path
from befriend.clients.contacts_io import read_csv
from befriend.v1 import sync_pb2

from .conftest import run_cli as run
from .fakes import StreamFault, ThreadedServer
from .test_contacts_io import CSV, VCARD3, VCARD4


def vcards(n: int) -> bytes:
    return b"".join(
        f"BEGIN:VCARD\r\nVERSION:3.0\r\nUID:u{i}\r\nFN:Person {i}\r\n"
        f"TEL;TYPE=CELL:1390000{i:04d}\r\nEND:VCARD\r\n".encode()
        for i in range(n)
    )


def test_import_then_export_restores_the_file(
    threaded_server: ThreadedServer, token_file: Path, tmp_path: Path
) -> None:
    rec = threaded_server.recorder
    book = tmp_path / "phone.vcf"
    data = vcards(1200) + VCARD3 + VCARD4
    book.write_bytes(data)
    rec.sync.upload_faults.append(StreamFault(1))  # the upload must resume by itself

    result = run(threaded_server, "contacts", "import", str(book))
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        "stored 1202 of 1202 entries in users/u1/addressBooks/phone",
        "rejected 0",
    ]
    device = device_id_path().read_text().strip()
    assert device_id_path().parent == token_file.parent
    assert device.startswith("cli-")
    assert [r.device.device_id for r in rec.requests("RegisterDevice")][-1] == device
    chunks = rec.requests("UploadContacts")
    assert {c.device_id for c in chunks} == {device}
    assert {c.address_book_kind for c in chunks} == {sync_pb2.ADDRESS_BOOK_KIND_DEVICE_PHONE_BOOK}
    assert chunks[0].mode == sync_pb2.UPLOAD_MODE_INCREMENTAL
    assert {md["authorization"] for md in rec.metadata("UploadContacts")} == {"Bearer tok-cli"}
    assert rec.sync.upload_streams == 2 and set(rec.sync.applied.values()) == {1}

    exported = run(threaded_server, "contacts", "export")
    assert exported.exit_code == 0, exported.output
    assert exported.stdout_bytes == data
    assert "exported 1202 entries from phone" in exported.stderr
    request = rec.sync.restore_requests[-1]
    assert request.device_id == device  # the same stable id
    assert (list(request.held_entry_ids), list(request.held_content_hashes)) == ([], [])

    out = tmp_path / "out.csv"
    as_csv = run(threaded_server, "contacts", "export", "-o", str(out))
    assert as_csv.exit_code == 0, as_csv.output
    rows = read_csv(out.read_bytes()).entries
    assert len(rows) == 1202 and rows[0].entry_id == "u0"
    assert rows[0].contact.mobile_numbers[0].raw == "13900000000"
    forced = run(threaded_server, "contacts", "export", "--format", "csv")
    assert forced.stdout_bytes == out.read_bytes()


def test_csv_import_with_rejections_and_skipped_rows(
    threaded_server: ThreadedServer, token_file: Path, tmp_path: Path
) -> None:
    book = tmp_path / "contacts.csv"
    book.write_bytes(CSV.encode() + b"\r\nREJECT me,13900000000\r\n")
    result = run(
        threaded_server,
        "contacts", "import", str(book), "--book", "work", "--device-id", "dev-9",
        "--kind", "email", "--full",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == "stored 3 of 4 entries in users/u1/addressBooks/work"
    assert lines[1] == "rejected 1"
    assert lines[2].startswith("  sha256:")
    assert lines[2].endswith(
        "(chunk 1 #3) contact.mobile_numbers[0].raw: ERROR_REASON_INVALID_ARGUMENT "
        "not a phone number"
    )
    assert lines[3] == "skipped 1 unreadable record(s) of contacts.csv"
    assert "warning: skipped row #3 (line 7): no contact data in the row" in result.stderr
    assert "warning: ignored columns: Notes" in result.stderr
    chunk = threaded_server.recorder.requests("UploadContacts")[0]
    assert (chunk.device_id, chunk.address_book_id) == ("dev-9", "work")
    assert chunk.address_book_kind == sync_pb2.ADDRESS_BOOK_KIND_EMAIL_BOOK
    assert chunk.mode == sync_pb2.UPLOAD_MODE_FULL_SNAPSHOT
    assert not device_id_path().exists()  # an explicit id is not stored

    listed = run(threaded_server, "books")
    assert listed.exit_code == 0, listed.output
    assert listed.stdout.splitlines() == ["work  email_book  3 entries  device dev-9  updated -"]


def test_contacts_errors(threaded_server: ThreadedServer, token_file: Path, tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    wrong = run(threaded_server, "contacts", "import", str(text))
    assert wrong.exit_code == 2
    assert "cannot tell the format" in wrong.stderr

    missing = run(threaded_server, "contacts", "export", "--book", "nope")
    assert missing.exit_code == 1
    assert missing.stderr.startswith("error: NOT_FOUND NOT_FOUND: no such address book")

    empty = run(threaded_server, "books")
    assert empty.exit_code == 0 and empty.stdout == ""

    token_file.unlink()
    book = tmp_path / "a.vcf"
    book.write_bytes(VCARD3)
    no_token = run(threaded_server, "contacts", "import", str(book))
    assert no_token.exit_code == 1
    assert no_token.stderr.startswith("error: UNAUTHENTICATED: no token")
