"""Valid commands and request bodies for tests, with unique ids and matching personal numbers."""

from __future__ import annotations

import itertools
import random
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

from services.registry.application import Registry
from services.registry.commands import DecideRegistration, RegisterCitizen
from services.settings import Settings

VN = timezone(timedelta(hours=7))
COMMUNES = {"22420": "56", "22453": "56", "22528": "56"}  # Phường Cam Ranh, Xã Cam Lâm, Ninh Hòa


# Distinct serials within a test process (from a random start): random ones collided now and
# then with a citizen an earlier test of the same deployment had registered.
_SERIALS = itertools.count(random.randrange(10**6))


def personal_number(
    year: int = 1990, female: bool = False, serial: int | None = None, province: str = "056"
) -> str:
    """A valid 12-digit number: birth province, century-and-sex digit, year, serial (mod 10⁶)."""
    century_digit = 2 * ((year - 1900) // 100) + (1 if female else 0)
    serial = next(_SERIALS) % 10**6 if serial is None else serial % 10**6
    return f"{province}{century_digit}{year % 100:02d}{serial:06d}"


def registration_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "command_id": f"reg-{uuid.uuid4()}",
        "citizen_id": personal_number(),
        "full_name": "Nguyễn Thị Test",
        "date_of_birth": "1990-05-01",
        "sex": "male",
        "commune_code": "22420",
        "station_id": "st-cam-ranh",
        "device_id": "dev-01",
        "operator_id": "op-7",
        "channel": "station",
        "phone": "smart",
        "captured_at": (datetime.now(VN) - timedelta(minutes=5)).isoformat(),
    }
    body.update(overrides)
    return body


def register_command(
    citizen_id: str | None = None,
    commune: str = "22420",
    captured_at: str = "2023-06-27T09:15:00+07:00",
) -> RegisterCitizen:
    return RegisterCitizen(
        command_id=f"reg-{uuid.uuid4()}",
        citizen_id=citizen_id or personal_number(),
        full_name="Trần Văn Test",
        date_of_birth="1990-05-01",
        sex="male",
        commune_code=commune,
        province_code=COMMUNES[commune],
        station_id="st-1",
        device_id="dev-1",
        operator_id="op-1",
        channel="station",
        phone="basic",
        captured_at=captured_at,
    )


def approve_command(citizen_id: str) -> DecideRegistration:
    return DecideRegistration(
        command_id=f"dec-{uuid.uuid4()}",
        citizen_id=citizen_id,
        decision="approved",
        reason="",
        decided_at="2023-06-27T10:05:00+07:00",
    )


def registry_with(settings: Settings, registrations: int = 0) -> Registry:
    """A registry on `settings`' store, with that many new citizens registered in it."""
    registry = Registry(settings)
    for _ in range(registrations):
        registry.handle(register_command())
    return registry
