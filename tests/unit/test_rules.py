"""Input rules that need no I/O: times, localities, settings."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services.registry.validation import InvalidCommandError, check_time, province_of
from services.settings import Settings, parse_auth_tokens

START = datetime.fromisoformat("2023-01-01T00:00:00+07:00")


def test_a_time_a_little_ahead_of_the_server_is_accepted() -> None:
    check_time("captured_at", datetime.now(UTC) + timedelta(minutes=4), START, 300)


def test_a_time_more_than_five_minutes_ahead_is_refused() -> None:
    with pytest.raises(InvalidCommandError) as err:
        check_time("captured_at", datetime.now(UTC) + timedelta(minutes=6), START, 300)
    assert "captured_at" in err.value.fields


def test_a_time_before_the_campaign_is_refused() -> None:
    with pytest.raises(InvalidCommandError):
        check_time("decided_at", START - timedelta(seconds=1), START, 300)


def test_the_province_comes_from_the_current_commune() -> None:
    assert province_of("22420") == "56"  # Phường Cam Ranh, Khánh Hòa


@pytest.mark.parametrize("code", ["99999", "00000", "abcde"])
def test_unknown_communes_are_refused(code: str) -> None:
    with pytest.raises(InvalidCommandError) as err:
        province_of(code)
    assert list(err.value.fields) == ["commune_code"]


def test_a_campaign_start_without_offset_is_vietnam_time(tmp_path) -> None:
    settings = Settings.from_env({"VAR_DIR": str(tmp_path), "CAMPAIGN_START": "2023-06-01"})
    assert settings.campaign_start == datetime.fromisoformat("2023-06-01T00:00:00+07:00")


def test_auth_tokens_map_tokens_to_roles() -> None:
    assert parse_auth_tokens("station=a, viewer=b") == {"a": "station", "b": "viewer"}
    with pytest.raises(ValueError, match="role=token"):
        parse_auth_tokens("superuser=x")


def test_the_pseudonym_key_is_generated_once_and_kept(tmp_path) -> None:
    first = Settings.from_env({"VAR_DIR": str(tmp_path)}).pseudonym_secret
    assert Settings.from_env({"VAR_DIR": str(tmp_path)}).pseudonym_secret == first
    assert len(first) == 64


def test_commune_codes_of_a_province_keep_their_leading_zeros() -> None:
    from services.api.progress import communes_of

    hanoi = communes_of("01")
    assert hanoi and all(len(code) == 5 and code.startswith("00") for code in hanoi[:5])
    assert all(province_of(code) == "01" for code in hanoi)
