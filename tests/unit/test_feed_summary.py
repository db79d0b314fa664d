"""The live feed's summary of one stored batch, from events decoded plainly (times in ms)."""

from __future__ import annotations

from datetime import UTC, datetime

from services.api.feed import summarize


def ms(*parts: int) -> int:
    return int(datetime(*parts, tzinfo=UTC).timestamp()) * 1000  # type: ignore[misc]


def test_counts_by_commune_vietnam_hour_and_type() -> None:
    def event(at: int, commune: str = "22420", kind: str = "registration_received") -> dict:
        return {"occurred_at": at, "province_code": "56", "commune_code": commune,
                "event_type": kind}  # fmt: skip

    events = [
        event(ms(2023, 6, 27, 2, 0) + 1),
        event(ms(2023, 6, 27, 2, 59, 59) + 999),
        event(ms(2023, 6, 27, 3, 0)),
        event(ms(2023, 6, 27, 2, 30), commune="22453"),
        event(ms(2023, 6, 27, 2, 30), kind="account_activated"),
        event(-1),  # a moment before 1970 still falls in its own hour
    ]
    summary = summarize(events)
    assert summary["events"] == 6
    assert [(c["commune_code"], c["hour"], c["event_type"], c["n"]) for c in summary["counts"]] == [
        ("22420", "1970-01-01T06:00:00+07:00", "registration_received", 1),
        ("22420", "2023-06-27T09:00:00+07:00", "account_activated", 1),
        ("22420", "2023-06-27T09:00:00+07:00", "registration_received", 2),
        ("22420", "2023-06-27T10:00:00+07:00", "registration_received", 1),
        ("22453", "2023-06-27T09:00:00+07:00", "registration_received", 1),
    ]
