"""The registry's own uuid5 and province lookup give what the slower originals give."""

from __future__ import annotations

import pickle
import random
import uuid

import pytest

from services.registry import identity
from services.registry.identity import COMMAND_NAMESPACE, command_uuid, event_id
from services.registry.validation import InvalidCommandError, province_of


def test_uuid5_is_the_standard_librarys_in_every_respect() -> None:
    rng = random.Random(5)
    for _ in range(3000):
        name = "".join(rng.choice("abcé😀-0123/:") for _ in range(rng.randrange(40)))
        namespace = rng.choice([COMMAND_NAMESPACE, uuid.uuid4(), uuid.UUID(int=0)])
        ours, theirs = identity.uuid5(namespace, name), uuid.uuid5(namespace, name)
        assert (ours, str(ours), repr(ours), hash(ours)) == (theirs, str(theirs), repr(theirs),
                                                            hash(theirs))  # fmt: skip
        assert (ours.version, ours.variant, ours.is_safe) == (5, uuid.RFC_4122, theirs.is_safe)
    assert pickle.loads(pickle.dumps(identity.uuid5(COMMAND_NAMESPACE, "x"))) == uuid.uuid5(
        COMMAND_NAMESPACE, "x"
    )
    with pytest.raises(UnicodeEncodeError):
        identity.uuid5(COMMAND_NAMESPACE, "\ud800")


def test_command_and_event_ids_are_unchanged() -> None:
    account = uuid.UUID("0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0")
    assert command_uuid("reg-0001") == uuid.uuid5(COMMAND_NAMESPACE, "reg-0001")
    assert event_id(account, 3) == uuid.uuid5(account, "3")
    # golden: what the ids were before, so that stored receipts and event ids still match
    assert str(command_uuid("reg-0001")) == str(uuid.uuid5(COMMAND_NAMESPACE, "reg-0001"))
    assert str(event_id(account, 1)) == "b8e78fe6-9ee7-5153-804f-48b1d34af8a4"


def test_province_lookup_is_remembered_but_refusals_are_not_lost() -> None:
    assert province_of("22420") == "56"
    assert province_of("22420") == "56"
    for code in ("99999", "abcde", "", "00000"):
        for _ in range(2):  # the second time as the first
            with pytest.raises(InvalidCommandError) as caught:
                province_of(code)
            assert caught.value.fields == {"commune_code": "not a current commune or ward code"}
