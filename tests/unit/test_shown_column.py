"""The packed column a history is read from (audit.sql `shown`) holds exactly HISTORY_COLUMNS,
in their order, in both row tables: the reader zips the two together."""

from __future__ import annotations

import re

from projections.audit import HISTORY_COLUMNS
from projections.clickhouse import SQL_DIR


def test_shown_packs_the_history_columns_in_order() -> None:
    sql = (SQL_DIR / "audit.sql").read_text()
    packed = re.findall(
        r"ADD COLUMN IF NOT EXISTS shown String MATERIALIZED\s+"
        r"formatRowNoNewline\('JSONCompactEachRow',([^)]*)\)",
        sql,
    )
    assert len(packed) == 2  # audit_events and access_events
    for columns in packed:
        assert [c.strip() for c in columns.split(",")] == HISTORY_COLUMNS
