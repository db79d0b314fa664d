"""A broker of its own, stopped and started again under the relay and the projector."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from schemas.codec import citizen_event_codec
from services.registry.application import Registry
from services.settings import Settings
from tests.support.broker import Broker
from tests.support.environment import unique
from tests.support.factories import approve_command, personal_number, register_command
from tests.support.kafka import projector_lag, read_topic
from tests.support.processes import python_process
from tests.support.waiting import wait_until

PORT = int(os.environ.get("TEST_RESTART_KAFKA_PORT", "19392"))


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    own = Broker(tmp_path / "broker", PORT)
    own.start()
    try:
        yield own
    finally:
        own.stop()


def test_relay_and_projector_carry_on_across_a_broker_restart(broker, env_for, tmp_path) -> None:
    env = env_for(KAFKA_BOOTSTRAP=f"127.0.0.1:{PORT}", KAFKA_TOPIC=unique("restart"),
                  CLICKHOUSE_URL=f"chdb://{tmp_path / 'chdb'}")  # fmt: skip
    settings = Settings.from_env(env)
    registry = Registry(settings)
    total = 600

    def write(start: int, stop: int) -> None:
        for i in range(start, stop):
            cid = personal_number(serial=i)
            registry.handle(register_command(cid))
            registry.handle(approve_command(cid))

    write(0, 100)
    relay = python_process(["-m", "services.relay", "--batch-size", "20"], env)
    projector = python_process(["-m", "projections", "run"], env)
    try:
        wait_until(lambda: len(read_topic(settings.kafka_bootstrap, settings.kafka_topic,
                                          50, timeout=60)) >= 50, 60)  # fmt: skip
        writer = threading.Thread(target=write, args=(100, total // 2))
        writer.start()
        broker.stop()  # while the writer goes on and the relay is mid-stream
        broker.start()
        writer.join(120)
        records = read_topic(settings.kafka_bootstrap, settings.kafka_topic, total, timeout=120)
        wait_until(lambda: projector_lag(settings.kafka_bootstrap, settings) == 0, 120, every=0.5)
    finally:
        for proc in (relay, projector):
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)

    codec = citizen_event_codec()
    positions = {codec.decode(r.value)["position"] for r in records}
    assert len(records) == len(positions) == total  # each store event once, none missing
    stats = python_process(["-m", "projections", "stats"], env, stdout=subprocess.PIPE)
    out, _ = stats.communicate(timeout=60)
    assert f'"rows":{total},"unique_events":{total}' in out.replace(" ", "")
