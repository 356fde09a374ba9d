"""pii: e-mails, public IPs and phone numbers are masked; look-alikes are left alone."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from pipeline import run
from pipeline.documents import Document
from stages.filters.pii import Pii, PiiParams


def mask(text: str, **params) -> Document:
    return Pii("pii", PiiParams(**params), None).apply(Document(id="d", text=text))


def test_emails_are_replaced_in_rotation():
    doc = mask("Write to jane.doe@corp.example.com or to bob+news@mail.co.uk today.")
    assert doc.text == "Write to email@example.com or to firstname.lastname@example.org today."
    assert doc.columns["pii_emails"] == 2
    assert mask("Write to jane@corp.com.", emails=False).text == "Write to jane@corp.com."


def test_public_ips_only_by_default():
    doc = mask("Servers 8.8.8.8 and 203.0.114.7, router 192.168.1.1, loopback 127.0.0.1.")
    assert "8.8.8.8" not in doc.text and "192.168.1.1" in doc.text and "127.0.0.1" in doc.text
    assert doc.columns["pii_ips"] == 2
    assert mask("router 192.168.1.1", only_public_ips=False).columns["pii_ips"] == 1
    # not addresses: an octet above 255, a version string, a longer dotted number
    untouched = "Version 10.0.0.300, release v1.2.3.4, OID 1.3.6.1.4.1 stay."
    assert mask(untouched).text == untouched


@pytest.mark.parametrize("phone", [
    "(555) 123-4567", "555-123-4567", "555.123.4567", "+44 20 7946 0958", "+1 415 555 2671",
    "+33 1 42 68 53 00",
])
def test_phone_numbers(phone):
    doc = mask(f"Call us at {phone} during office hours.")
    assert phone not in doc.text and doc.columns["pii_phones"] == 1
    assert doc.text.startswith("Call us at +1 555-01") and doc.text.endswith(" during office hours.")


@pytest.mark.parametrize("text", [
    "The year 2024-01-01 was busy.", "ISBN 978-3-16-148410-0 is a book.",
    "It cost 1 000 000 dollars.", "Order 12345678901 shipped.", "Pi is 3.14159265.",
    "Tel 123-45 is too short.",
])
def test_look_alikes_are_not_phone_numbers(text):
    doc = mask(text)
    assert doc.text == text and doc.columns["pii_phones"] == 0


def test_stage_keeps_every_document_and_counts(tmp_path):
    path = tmp_path / "docs.jsonl"
    texts = ["Mail a@b.org now.", "No personal data here.", "Ping 8.8.4.4 or call 555-123-4567."]
    path.write_text("".join(json.dumps({"id": str(i), "text": t}) + "\n" for i, t in enumerate(texts)))
    outcomes = run({
        "name": "pii",
        "run_dir": str(tmp_path / "run"),
        "stages": {
            "ingest": {"kind": "ingest", "params": {"paths": [str(path)], "id_field": "id"}},
            "pii": {"kind": "pii", "inputs": ["ingest"]},
        },
    })
    counts = {o.name: o.counts for o in outcomes}["pii"]
    assert counts.n_in == counts.kept == 3 and not counts.dropped
    rows = pq.read_table(sorted((tmp_path / "run" / "pii" / "shards").glob("*.parquet"))[0]).to_pylist()
    assert [r["text"] for r in rows] == [
        "Mail email@example.com now.", "No personal data here.",
        "Ping 22.214.171.124 or call +1 555-0100.",
    ]
    assert [(r["pii_emails"], r["pii_ips"], r["pii_phones"]) for r in rows] == [
        (1, 0, 0), (0, 0, 0), (0, 1, 1),
    ]


def test_texts_without_a_hint_are_not_scanned_and_lose_nothing():
    """The whole-text hints skip an expression only where it cannot match: on random text
    of digits and separators, masking with the hints equals running every expression."""
    import random

    from stages.filters.pii import EMAIL_RE, IP_HINT, IPV4_RE, PHONE_HINT, PHONE_RE

    rng = random.Random(3)
    alphabets = ["0123456789" * 3 + " .-+()@ab\n", "12" * 3 + "....  -a"]  # the second: IPs
    for i in range(4000):
        alphabet = alphabets[i % 2]
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(5, 40)))
        for pattern, hint in ((IPV4_RE, IP_HINT), (PHONE_RE, PHONE_HINT), (EMAIL_RE, None)):
            for match in pattern.finditer(text):
                assert (hint.search(match.group(0)) if hint else "@" in match.group(0)), text
    assert mask("Call 555 123 4567 or 8.8.8.8").columns == {
        "pii_emails": 0, "pii_ips": 1, "pii_phones": 1}
