"""History answers checked against the signed log, on the real store, broker and ClickHouse engine.

Each tampering test changes the read model the way someone with write access to it could, then
reads the history through the API and checks it again as the auditor's tool does, with only the
pinned key: both must refuse it. The one that must pass: a read model behind is `pending`.
"""

from __future__ import annotations

import base64
import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from schemas.chain import content_of, link_hash
from schemas.checkpoint import Checkpoint, open_note, sign
from schemas.codec import citizen_event_codec
from schemas.leaf import leaf_bytes
from schemas.merkle import leaf_hash, verify_inclusion
from schemas.proofs import decode_hashes
from services.api.app import create_app
from services.auditor.verify import Seen, verify_answer
from services.settings import Settings
from services.signer.keys import load_signing_key
from tests.support.environment import TOKENS, bearer
from tests.support.factories import registration_body
from tests.support.kafka import publish_all, read_topic
from tests.support.waiting import wait_until

AUDITOR = {"Authorization": f"Bearer {TOKENS['auditor']}"}
STATION = {"Authorization": f"Bearer {TOKENS['station']}"}


@dataclasses.dataclass
class Deployment:
    client: TestClient
    backbone: Any

    @property
    def table(self) -> str:
        return str(self.backbone.trail.table)

    def sql(self, statement: str) -> None:
        self.backbone.trail.client.command(f"{statement} SETTINGS mutations_sync = 1")

    def verifier(self) -> str:
        return str(self.client.get("/v1/checkpoints/key", headers=AUDITOR).json()["verifier_key"])

    def consistency(self, first: int, second: int) -> list[bytes] | None:
        answer = self.client.get("/v1/checkpoints/consistency", headers=AUDITOR,
                                 params={"from": first, "to": second})  # fmt: skip
        return decode_hashes(answer.json()["hashes"]) if answer.status_code == 200 else None


@pytest.fixture
def deployment(kafka_bootstrap, env_for, chdb_url) -> Iterator[Deployment]:
    settings = Settings.from_env(env_for(CLICKHOUSE_URL=chdb_url))
    with TestClient(create_app(settings)) as client:
        yield Deployment(client, client.app.state.backbone)  # type: ignore[attr-defined]


def registered_and_decided(d: Deployment) -> str:
    body = registration_body()
    assert d.client.post("/v1/registrations", json=body, headers=STATION).status_code == 201
    decision = {"command_id": f"d-{body['citizen_id']}", "citizen_id": body["citizen_id"],
                "decision": "rejected", "reason": "photo unclear",
                "decided_at": body["captured_at"]}  # fmt: skip
    assert (
        d.client.post("/v1/decisions", json=decision, headers=bearer("reviewer")).status_code == 201
    )
    publish_all(d.backbone.settings, d.backbone.registry)
    return str(body["citizen_id"])


def read(d: Deployment, citizen: str) -> dict[str, Any]:
    body = {"citizen_id": citizen, "purpose": "audit of proofs"}
    answer = d.client.post("/v1/citizens/history", json=body, headers=AUDITOR)
    assert answer.status_code == 200, answer.text
    return answer.json()  # type: ignore[no-any-return]


def settled(d: Deployment, citizen: str, reads: int = 0) -> dict[str, Any]:
    """The history once its two events (and `reads` earlier reads) are projected and signed."""

    def done() -> dict[str, Any] | None:
        if reads:
            publish_all(d.backbone.settings, d.backbone.registry)  # the reads, to the read model
        answer = read(d, citizen)
        ok = answer["verification"]["status"] == "verified" and len(answer["reads"]) >= reads
        return answer if ok else None

    return wait_until(done, 60, every=0.3)  # type: ignore[return-value]


def offline(d: Deployment, answer: dict[str, Any], seen: Seen | None = None) -> Any:
    return verify_answer(answer, d.verifier(), seen, d.consistency)


def test_an_untouched_history_verifies_here_and_offline(deployment: Deployment) -> None:
    citizen = registered_and_decided(deployment)
    answer = settled(deployment, citizen)
    proofs = [e["proof"] for e in answer["events"]]
    assert all(p["tree_size"] == answer["checkpoint"]["size"] for p in proofs)
    assert answer["verification"]["signed_log"]["failed"] == []
    assert answer["verification"]["signed_log"]["actor_unsigned"] == []
    station, reviewer = (e["actor"] for e in answer["events"])  # the principals, proved
    assert station.startswith("station:") and reviewer.startswith("reviewer:")
    result = offline(deployment, answer)
    assert result.ok, result.lines
    assert result.lines[-1].startswith("VERIFIED: 2 events")


def test_a_row_altered_with_its_chain_recomputed_fails(deployment: Deployment) -> None:
    citizen = registered_and_decided(deployment)
    events = settled(deployment, citizen)["events"]
    decision = events[1]
    # rejected -> approved, and the link recomputed so that the per-account chain still holds.
    payload = {"decision": "approved", "sealed_reason": decision["payload"]["sealed_reason"]}
    content = content_of(decision["account_id"], 2, decision["event_type"],
                         decision["occurred_at"], decision["province_code"],
                         decision["commune_code"], payload)  # fmt: skip
    new_hash = link_hash(decision["previous_hash"], content)
    deployment.sql(
        f"ALTER TABLE {deployment.table} UPDATE detail = '{json.dumps(payload)}', "
        f"hash = '{new_hash}' WHERE event_id = '{decision['event_id']}'"
    )
    answer = read(deployment, citizen)
    verification = answer["verification"]
    assert answer["events"][1]["payload"]["decision"] == "approved"  # shown as altered ...
    assert verification["chain_intact"] is True  # ... the chain alone would not notice ...
    assert verification["status"] == "broken"  # ... the signed log does
    assert verification["first_broken_link"] == {"sequence": 2, "event_id": decision["event_id"]}
    result = offline(deployment, answer)
    assert not result.ok and result.status == "broken"
    assert any("sequence 2" in line and "does not match" in line for line in result.lines)


@pytest.mark.parametrize(
    ("change", "column"),
    [
        ("recorded_at = recorded_at + INTERVAL 1 SECOND", "recorded_at"),
        ("operator_id = 'someone-else'", "operator_id"),
        ("station_id = 'another-station'", "station_id"),
        ("position = position + 1", "position"),
        # Schema v3: the principal who sent the command, committed to by the leaf.
        ("actor = 'station:someone-else'", "actor"),
        ("actor = ''", "actor"),  # hidden: a leaf that commits to an actor needs it shown
    ],
)
def test_a_changed_field_fails(deployment: Deployment, change: str, column: str) -> None:
    citizen = registered_and_decided(deployment)
    first = settled(deployment, citizen)["events"][0]
    deployment.sql(f"ALTER TABLE {deployment.table} UPDATE {change} "
                   f"WHERE event_id = '{first['event_id']}'")  # fmt: skip
    answer = read(deployment, citizen)
    assert answer["events"][0][column] != first[column]
    assert answer["verification"]["status"] == "broken"
    assert answer["verification"]["first_broken_link"]["sequence"] == 1
    assert not offline(deployment, answer).ok


def test_two_rows_swapped_fail(deployment: Deployment) -> None:
    citizen = registered_and_decided(deployment)
    first, second = settled(deployment, citizen)["events"]
    # The registration and the decision trade places (their sequences swapped).
    a, b, t = first["event_id"], second["event_id"], deployment.table
    deployment.backbone.trail.client.command(  # a key column: rewritten, not updated
        f"INSERT INTO {t} SELECT * REPLACE (if(sequence = 1, 2, 1) AS sequence) FROM {t} "
        f"WHERE event_id IN ('{a}', '{b}')"
    )
    deployment.sql(f"ALTER TABLE {t} DELETE WHERE (event_id = '{a}' AND sequence = 1) "
                   f"OR (event_id = '{b}' AND sequence = 2)")  # fmt: skip
    answer = read(deployment, citizen)
    assert [e["event_type"] for e in answer["events"]] == [second["event_type"],
                                                           first["event_type"]]  # fmt: skip
    assert answer["verification"]["status"] == "broken"
    assert len(answer["verification"]["signed_log"]["failed"]) == 2
    assert not offline(deployment, answer).ok


def test_a_deleted_row_makes_the_history_incomplete(deployment: Deployment) -> None:
    citizen = registered_and_decided(deployment)
    events = settled(deployment, citizen)["events"]
    deployment.sql(f"ALTER TABLE {deployment.table} DELETE "
                   f"WHERE event_id = '{events[1]['event_id']}'")  # fmt: skip
    answer = read(deployment, citizen)
    assert answer["verification"]["status"] == "incomplete"
    assert answer["verification"]["missing_sequences"] == [2]
    result = offline(deployment, answer)
    assert not result.ok and result.status == "incomplete"


def test_a_removed_access_record_makes_the_history_incomplete(deployment: Deployment) -> None:
    citizen = registered_and_decided(deployment)
    settled(deployment, citizen)
    answer = settled(deployment, citizen, reads=2)  # the earlier reads, projected and signed
    gone = answer["reads"][0]
    access = f"{deployment.backbone.trail.access_table}"
    deployment.sql(f"ALTER TABLE {access} DELETE WHERE event_id = '{gone['event_id']}'")
    answer = read(deployment, citizen)
    verification = answer["verification"]
    assert verification["status"] == "incomplete"
    assert gone["position"] in verification["signed_log"]["missing_reads"]
    assert not offline(deployment, answer).ok


def test_an_altered_access_record_fails(deployment: Deployment) -> None:
    citizen = registered_and_decided(deployment)
    settled(deployment, citizen)
    answer = settled(deployment, citizen, reads=1)
    target = answer["reads"][0]
    access = f"{deployment.backbone.trail.access_table}"
    deployment.sql(
        f"ALTER TABLE {access} UPDATE detail = replace(detail, 'audit of proofs', 'routine') "
        f"WHERE event_id = '{target['event_id']}'"
    )
    answer = read(deployment, citizen)
    assert answer["verification"]["status"] == "broken"
    assert [f["kind"] for f in answer["verification"]["signed_log"]["failed"]] == ["read"]


def test_a_read_model_behind_is_pending_not_broken(kafka_bootstrap, env_for, chdb_url) -> None:
    settings = Settings.from_env(env_for(CLICKHOUSE_URL=chdb_url))
    with TestClient(create_app(settings, embedded_projector=False)) as client:
        d = Deployment(client, client.app.state.backbone)  # type: ignore[attr-defined]
        citizen = registered_and_decided(d)  # in the store and signed, projected by no one
        answer = wait_until(lambda: (a := read(d, citizen))["checkpoint"] and a, 30)
        assert answer["events"] == []
        assert answer["verification"]["status"] == "pending"
        result = offline(d, answer)
        assert not result.ok and result.status == "pending"


def test_a_rolled_back_or_forked_log_and_a_wrong_key_are_reported(
    deployment: Deployment, tmp_path: Path
) -> None:
    citizen = registered_and_decided(deployment)
    answer = settled(deployment, citizen)
    verifier = deployment.verifier()
    seen = offline(deployment, answer).remember
    assert seen is not None

    # A fork: another checkpoint of the same size, with another root, signed with the key.
    settings = deployment.backbone.settings
    key = load_signing_key(settings.checkpoint_key_file)
    size = seen.checkpoint.size
    forged_note = sign(Checkpoint(settings.checkpoint_origin, size, b"\x01" * 32),
                       settings.checkpoint_origin, key)  # fmt: skip
    forked = Seen(Checkpoint(settings.checkpoint_origin, size, b"\x01" * 32), forged_note)
    result = verify_answer(answer, verifier, forked, deployment.consistency)
    assert not result.ok and result.status == "fork"
    assert forged_note in "\n".join(result.lines) and seen.note in "\n".join(result.lines)

    # A rollback: the auditor saw a bigger log than the one now shown, which it does not extend.
    bigger = Checkpoint(settings.checkpoint_origin, size + 5, b"\x02" * 32)
    ahead = Seen(bigger, sign(bigger, settings.checkpoint_origin, key))
    result = verify_answer(answer, verifier, ahead, lambda a, b: [b"\x03" * 32])
    assert not result.ok and result.status == "rollback"

    # The log only grew since: consistent, verified, and the newer checkpoint remembered.
    registered_and_decided(deployment)
    later = wait_until(lambda: (a := read(deployment, citizen))["checkpoint"]["size"] > size
                       and a["verification"]["status"] == "verified" and a, 30)  # fmt: skip
    result = verify_answer(later, verifier, seen, deployment.consistency)
    assert result.ok, result.lines
    assert result.remember is not None and result.remember.checkpoint.size > size

    # A key other than the log's (unknown to the auditor), or a damaged pinned one.
    other = load_signing_key(tmp_path / "other.key")
    from services.signer.keys import verifier_of

    result = verify_answer(answer, verifier_of(settings.checkpoint_origin, other), None,
                           deployment.consistency)  # fmt: skip
    assert not result.ok and result.status == "rejected"
    name, _, rest = verifier.partition("+")
    raw = bytearray(base64.b64decode(rest.partition("+")[2]))
    raw[5] ^= 1
    damaged = f"{name}+{rest.partition('+')[0]}+{base64.b64encode(bytes(raw)).decode()}"
    result = verify_answer(answer, damaged, None, deployment.consistency)
    assert not result.ok and result.status == "rejected"


def test_checkpoint_endpoints(deployment: Deployment) -> None:
    registered_and_decided(deployment)
    latest = wait_until(
        lambda: (r := deployment.client.get("/v1/checkpoints/latest", headers=AUDITOR))
        .status_code == 200 and r.json(), 30)  # fmt: skip
    same = deployment.client.get(f"/v1/checkpoints/{latest['size']}", headers=AUDITOR).json()
    assert same == latest
    assert deployment.client.get("/v1/checkpoints/999999", headers=AUDITOR).status_code == 404
    bad = deployment.client.get("/v1/checkpoints/consistency", headers=AUDITOR,
                                params={"from": 3, "to": 2})  # fmt: skip
    assert bad.status_code == 422
    assert deployment.client.get("/v1/checkpoints/latest").status_code == 401
    signer = deployment.client.get("/readyz").json()["components"]["signer"]
    assert signer["state"] == "running" and signer["thread_alive"] is True
    assert signer["checkpoints_signed"] >= 1 and signer["appended"] >= 2


def test_a_subscriber_proves_a_topic_record_by_its_position(deployment: Deployment) -> None:
    citizen = registered_and_decided(deployment)
    settled(deployment, citizen)
    settings = deployment.backbone.settings
    codec = citizen_event_codec()
    topic = read_topic(settings.kafka_bootstrap, settings.kafka_topic, 2)
    verifier = deployment.verifier()

    def proves(record: dict[str, Any]) -> bool:
        answer = deployment.client.get("/v1/checkpoints/inclusion", headers=AUDITOR,
                                       params={"position": record["position"]}).json()  # fmt: skip
        checkpoint = open_note(answer["checkpoint"]["note"], verifier)
        leaf = leaf_hash(leaf_bytes(record))
        hashes = decode_hashes(answer["hashes"])
        return verify_inclusion(leaf, answer["leaf_index"], checkpoint.size, hashes,
                                checkpoint.root)  # fmt: skip

    records = [codec.decode(r.value) for r in topic]
    assert all(proves(record) for record in records)
    payload = records[1]["payload"]
    assert payload["decision"] == "rejected"
    altered = {**records[1], "payload": {**payload, "decision": "approved"}}
    assert not proves(altered)
    assert records[1]["actor"].startswith("reviewer:")
    assert not proves({**records[1], "actor": "reviewer:someone-else"})
    assert not proves({**records[1], "actor": None})
    missing = deployment.client.get("/v1/checkpoints/inclusion", headers=AUDITOR,
                                    params={"position": 10**9})  # fmt: skip
    assert missing.status_code == 404
