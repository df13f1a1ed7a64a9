"""AUM hash text is parsed as Go's ``AUMHash.UnmarshalText`` parses it, everywhere.

Go checks that the raw text is 52 characters, then decodes it with
``encoding/base32`` (no padding), which drops ``\\r`` and ``\\n`` and
decodes a short final quantum as far as it goes. File names, sync offers
and the control service's JSON all go through the one parser.
"""

from __future__ import annotations

import pytest

from tka.aum import hash_from_text, hash_to_text
from tka.control import wire
from tka.errors import DecodeError
from tka.sync import SyncOffer

H = bytes(range(1, 33))
TEXT = hash_to_text(H)


def test_the_canonical_text_round_trips() -> None:
    assert hash_from_text(TEXT) == H


@pytest.mark.parametrize("sep", ["\n", "\r", "\r\n"])
def test_newlines_are_dropped_and_a_short_last_quantum_decodes_as_far_as_it_goes(
    sep: str,
) -> None:
    # 52 characters in all: 52 - len(sep) base32 digits remain.
    text = TEXT[:20] + sep + TEXT[20 : 52 - len(sep)]
    digits = 52 - len(sep)
    # Whole quanta of 8 digits give 5 bytes each; a final quantum of 3 digits
    # (51 = 6*8 + 3) gives nothing, of 2 digits (50 = 6*8 + 2) one byte.
    whole = digits // 8 * 5 + {0: 0, 2: 1, 3: 0, 4: 2}[digits % 8]
    want = H[:whole] + bytes(32 - whole)
    assert hash_from_text(text) == want


def test_sync_offers_accept_what_go_accepts() -> None:
    text = TEXT[:10] + "\r\n" + TEXT[10:50]
    offer = SyncOffer.from_text(text, [text])
    assert offer.head == hash_from_text(text)
    assert offer.ancestors == (offer.head,)


def test_the_control_service_reads_hashes_with_the_same_parser() -> None:
    text = TEXT[:51] + "\n"
    body = {"Version": 1, "NodeKey": "nodekey:" + "00" * 32, "Head": text, "Ancestors": [text]}
    req = wire.decode(wire.SyncOfferRequest, body)
    assert req.head == hash_from_text(text)
    assert tuple(req.ancestors) == (hash_from_text(text),)


@pytest.mark.parametrize(
    "text",
    [
        TEXT[:51],  # 51 characters: Go's length check refuses it
        TEXT + "A",  # 53
        TEXT[:51] + "=",  # no padding in this encoding
        TEXT[:51] + "a",  # lower case is not the alphabet
        TEXT[:51] + "1",
    ],
)
def test_what_go_refuses_is_refused(text: str) -> None:
    with pytest.raises(DecodeError):
        hash_from_text(text)
