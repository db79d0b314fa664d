"""The bench's report: the machine it ran on, a table on stdout, the JSON result and its history."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

from tests.support.processes import ROOT


def machine() -> dict[str, Any]:
    """CPU count (usable by this process), Python, CPU model and kernel."""
    cpu = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.partition(":")[2].strip()
                break
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "python": platform.python_version(),
        "cpu": cpu,
        "kernel": platform.release(),
        "load_start": load_average(),  # other work on the machine: the figures are shared
    }


def load_average() -> float | None:
    """The machine's 1-minute load average (None where the system has none)."""
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


def git_commit() -> str:
    """`git describe --always --dirty` of the repository, or "" when git cannot tell."""
    try:
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty"],
            cwd=ROOT,
            text=True,
            capture_output=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return out.stdout.strip()


def table(r: dict[str, Any], previous: dict[str, Any] | None = None) -> str:
    """The figures of a run in aligned columns; with `previous` (the run before it, from the
    history), its figures beside them, row by row."""
    rows = _rows(r)
    before = _previous_values(rows, previous)
    if before is not None:
        head = (f"previous: {previous.get('started_at', '?')} "  # type: ignore[union-attr]
                f"{previous.get('commit', '')}")  # type: ignore[union-attr]  # fmt: skip
        rows = [("", "this run"), *rows]
        before = [head, *before]
    width = max(len(label) for label, _ in rows)
    value_width = max(len(value) for _, value in rows)
    lines = [f"{label:<{width}}  {value:>{value_width}}" for label, value in rows]
    if before is not None:
        old_width = max(len(value) for value in before)
        lines = [f"{line}  {old:>{old_width}}" for line, old in zip(lines, before, strict=True)]
    return "\n".join(line.rstrip() for line in lines)


def _rows(r: dict[str, Any]) -> list[tuple[str, str]]:
    return [*_live_rows(r), *_catchup_rows(r), *_pipeline_rows(r), *_ceiling_rows(r),
            *_sealing_rows(r), *_proof_rows(r), *_store_rows(r), *_run_rows(r)]  # fmt: skip


def _previous_values(
    rows: list[tuple[str, str]], previous: dict[str, Any] | None
) -> list[str] | None:
    """The previous run's value of each row (matched by label and by how often the label
    came before), "" where it had none; None without a previous run, or one this report
    cannot read."""
    if not previous:
        return None
    try:
        old_rows = _rows(previous)
    except (KeyError, TypeError, ValueError, AttributeError):
        return None
    old: dict[tuple[str, int], str] = {}
    seen: dict[str, int] = {}
    for label, value in old_rows:
        seen[label] = seen.get(label, 0) + 1
        old[(label, seen[label])] = value
    values, seen = [], {}
    for label, _ in rows:
        seen[label] = seen.get(label, 0) + 1
        values.append(old.get((label, seen[label]), ""))
    return values


def previous_run(history: Path) -> dict[str, Any] | None:
    """The last run recorded in `history` (a JSON line each), or None."""
    with contextlib.suppress(OSError):
        lines = [line for line in history.read_text().splitlines() if line.strip()]
        for line in reversed(lines):
            with contextlib.suppress(ValueError):
                found = json.loads(line)
                if isinstance(found, dict):
                    return found
    return None


def _live_rows(r: dict[str, Any]) -> list[tuple[str, str]]:
    live = r.get("live", {})
    fresh, feed = live.get("freshness", {}), live.get("feed", {})
    p50, p99 = _ms(live.get("post_latency_p50_s")), _ms(live.get("post_latency_p99_s"))
    return [
        ("registrations (N)", _fmt(r["n"])),
        ("concurrency", _fmt(r["concurrency"])),
        ("accepted / failed", f"{_fmt(live.get('accepted'))} / {_fmt(live.get('failed'))}"),
        ("commands/s (POST phase)", _fmt(live.get("commands_per_s"))),
        ("POST latency p50 / p99 (ms)", f"{p50} / {p99}"),
        ("time until all counted (s)", _fmt(live.get("until_counted_s"), 2)),
        ("  of which after last POST (s)", _fmt(live.get("drain_after_posting_s"), 2)),
        (
            "freshness p50 / p99 (s)",
            f"{_fmt(fresh.get('p50_s'), 3)} / {_fmt(fresh.get('p99_s'), 3)}",
        ),
        (
            "POST -> live feed p50 / max (s), idle",
            f"{_fmt(feed.get('p50_s'), 3)} / {_fmt(feed.get('max_s'), 3)}",
        ),
    ]


def _catchup_rows(r: dict[str, Any]) -> list[tuple[str, str]]:
    relay, proj = r.get("relay", {}), r.get("projector", {})
    after_startup = _fmt(relay.get("events_per_s_after_startup"))
    batches = _fmt(proj.get("events_per_s_between_batches"))
    return [
        ("relay events/s (catch-up)", _fmt(relay.get("events_per_s"))),
        ("  after start-up / start-up (s)", f"{after_startup} / {_fmt(relay.get('startup_s'), 2)}"),
        ("projector events/s (catch-up)", _fmt(proj.get("events_per_s"))),
        (
            "  first..last batch / first batch (s)",
            f"{batches} / {_fmt(proj.get('first_batch_s'), 2)}",
        ),
    ]


def _pipeline_rows(r: dict[str, Any]) -> list[tuple[str, str]]:
    """The relay, projector and rebuild against the raw producer and consumer (medians)."""
    if "pipeline" not in r:
        return []
    p = r["pipeline"]
    rate, ratio, met = p.get("events_per_s", {}), p.get("ratios", {}), p.get("met", {})
    pairs = (
        ("relay / raw producer", "relay", "produce", "relay_to_raw_producer"),
        ("projector / raw consumer", "project", "consume", "projector_to_raw_consumer"),
        ("full rebuild / raw consumer", "rebuild", "consume", "rebuild_to_raw_consumer"),
    )
    rows = [(f"pipeline events/s, n {_fmt(p.get('n'))}, median of {_fmt(p.get('rounds'))}", "")]
    for label, ours, raw, key in pairs:
        figures = f"{_fmt(rate.get(ours), 0)} / {_fmt(rate.get(raw), 0)}"
        rows.append((f"  {label}", figures))
        rows.append((f"    ratio (goal >= {p.get('goal')})", _goal(ratio.get(key), met.get(key))))
    rows.append(("  raw consumer + Avro decode (no goal)", _fmt(rate.get("decode"), 0)))
    return rows


def _ceiling_rows(r: dict[str, Any]) -> list[tuple[str, str]]:
    """wrk figures, freshness at half the maximum rate, device sync; each goal met or not."""
    if "ceiling" not in r:
        return []
    c = r["ceiling"]
    noop, cmd, paced, sync = c.get("noop", {}), c.get("commands", {}), c["paced"], c["sync"]
    goals, met, fresh = c["goals"], c["met"], paced.get("freshness", {})
    runs = len(cmd.get("runs", noop.get("runs", [])))
    wrk = (f"wrk -t{c['threads']} -c{c['connections']}, {c['seconds']} s, median of {runs}"
           if c["wrk"] else "no wrk: skipped")  # fmt: skip
    ratio = "not measured" if c["ratio"] is None else f"{c['ratio']:.2f}"
    return [
        (f"HTTP ceiling ({wrk})", ""),
        ("  no-op endpoint req/s", _fmt(noop.get("ok_per_s"), 0)),
        ("  registrations commands/s", _fmt(cmd.get("ok_per_s"), 0)),
        ("  p50 / p99 (ms), no-op | registrations",
         f"{_fmt(noop.get('p50_ms'))} / {_fmt(noop.get('p99_ms'))} | "
         f"{_fmt(cmd.get('p50_ms'))} / {_fmt(cmd.get('p99_ms'))}"),
        (f"    ratio (goal >= {goals['commands_to_noop']})",
         ratio if c["ratio"] is None else _goal(c["ratio"], met["commands_to_noop"])),
        (f"freshness at half the max rate ({c['max_rate_from']})", ""),
        ("  offered / achieved commands/s",
         f"{_fmt(paced['offered_per_s'], 0)} / {_fmt(paced['achieved_per_s'], 0)}"),
        ("  freshness p50 / p99 (ms)", f"{_ms(fresh.get('p50_s'))} / {_ms(fresh.get('p99_s'))}"),
        (f"    p99 (goal <= {goals['freshness_p99_s'] * 1000:.0f} ms)",
         _goal(_times(fresh.get("p99_s"), 1000), met["freshness_p99_s"], 0)),
        (f"device sync commands/s, backlogs of {_fmt(sync['size'])}, median of "
         f"{len(sync['runs'])}", _fmt(sync.get("commands_per_s"), 0)),
        (f"    goal >= {goals['sync_commands_per_s']:,}",
         _goal(sync.get("commands_per_s"), met["sync_commands_per_s"], 0)),
    ]  # fmt: skip


def _times(value: float | None, factor: float) -> float | None:
    return None if value is None else value * factor


def _goal(value: float | None, met: bool | None, digits: int = 2) -> str:
    if value is None:
        return "not measured"
    return f"{value:,.{digits}f} {'met' if met else 'NOT met'}"


def _sealing_rows(r: dict[str, Any]) -> list[tuple[str, str]]:
    seal, hist = r.get("sealing", {}), r.get("history_read", {})
    on, off = _fmt(seal.get("commands_per_s_on")), _fmt(seal.get("commands_per_s_off"))
    return [
        (f"registry commands/s, M {_fmt(seal.get('m'))}, on / off", f"{on} / {off}"),
        ("  ratio on / off (of the medians)", _fmt(seal.get("ratio_on_off"), 2)),
        (
            f"history read p50 / p99 (ms), K {_fmt(hist.get('reads'))}",
            f"{_ms(hist.get('p50_s'))} / {_ms(hist.get('p99_s'))}",
        ),
    ]


def _proof_rows(r: dict[str, Any]) -> list[tuple[str, str]]:
    p = r.get("proofs", {})
    signer, lag = p.get("signer", {}), p.get("checkpoint_lag", {})
    raw, decoded = signer.get("ratio_to_read"), signer.get("ratio_to_decoded_read")
    rows = [
        ("signer leaves/s / store reads/s (raw)",
         f"{_fmt(signer.get('leaves_per_s'))} / {_fmt(signer.get('store_read_per_s'))}"),
        ("  ratio to raw / to decoded read",
         f"{_fmt(raw, 2)} / {_fmt(decoded, 2)}"),
        ("checkpoint lag p50 / p99 (ms)", f"{_ms(lag.get('p50_s'))} / {_ms(lag.get('p99_s'))}"),
    ]  # fmt: skip
    for size, t in p.get("trees", {}).items():
        timing = f"{_ms(t.get('p50_s'))} / {_ms(t.get('p99_s'))}"
        rows.append((f"proof read+verify p50 / p99 (ms), {int(size):,} leaves", timing))
        sizes = f"{_fmt(t.get('proof_bytes_max'))} / {_fmt(t.get('append_leaves_per_s'))}"
        rows.append(("  proof bytes max / tree appends/s", sizes))
    return rows


def _store_rows(r: dict[str, Any]) -> list[tuple[str, str]]:
    """EVENT_STORE=postgres: the stores side by side (medians of the rounds)."""
    if "stores" not in r:
        return []
    s = r["stores"]
    rate, relay = s.get("commands_per_s", {}), s.get("relay_postgres", {})
    arms = (("SQLite, 1 API", "sqlite_1_api"), ("PostgreSQL, 1 API", "postgres_1_api"),
            ("PostgreSQL, 2 APIs", "postgres_2_apis"))  # fmt: skip
    label = f"commands/s (n {_fmt(s.get('n'))}, median of {_fmt(s.get('rounds'))}, no projector)"
    rows = [(label, "")]
    rows += [(f"  {name}", _fmt(rate.get(key))) for name, key in arms]
    after = _fmt(relay.get("events_per_s_after_startup"))
    rows.append(("relay catch-up on PostgreSQL (events/s, after start-up)", after))
    return rows


def _run_rows(r: dict[str, Any]) -> list[tuple[str, str]]:
    m = r["machine"]
    start, end = m.get("load_start"), r.get("load_end")
    return [
        ("machine", f"nproc {m['nproc']}, Python {m['python']}"),
        ("load average (1 min) at start / end", f"{_fmt(start, 2)} / {_fmt(end, 2)}"),
        ("result", "OK" if r["ok"] else "FAILED"),
    ]


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}" if isinstance(value, float) else str(value)


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.1f}"


def save(r: dict[str, Any], out: Path, history: Path) -> None:
    """The result as JSON in `out` (replaced) and as one more line of `history`."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(r, indent=2, default=str) + "\n")
    history.parent.mkdir(parents=True, exist_ok=True)
    with history.open("a") as f:
        f.write(json.dumps(r, default=str) + "\n")
