"""The sealing phase: the registry's write path (no HTTP), personal data encryption on and off."""

from __future__ import annotations

import shutil
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from unittest import mock
from uuid import UUID

from services.registry import application
from services.registry.application import Outcome, Registry
from services.registry.commands import RegisterCitizen
from services.registry.sealing import PREFIX
from services.registry.validation import province_of
from services.settings import Settings
from tests.bench.deployment import BenchError, Deadline
from tests.bench.workload import registrations

BATCH = 256  # what the API's group-commit writer hands to `handle_batch`
ROUNDS = 3  # per arm, alternating on, off, on, off, ...
ARMS = ("on", "off")
BUDGET_S = 300.0


class ClearSealer:
    """The "off" arm's sealer: personal fields stay in clear (the registry before sealing)."""

    def seal(self, account_id: UUID, value: str) -> str:
        return value

    def for_account(self, account_id: UUID) -> Callable[[str], str]:
        return str

    def open(self, account_id: UUID, value: str) -> str:
        return value


def commands(n: int) -> list[RegisterCitizen]:
    """`n` registrations of the bench's workload, as the API's intake turns them into commands."""
    return [
        RegisterCitizen(**body, province_code=province_of(body["commune_code"]))
        for body in registrations(n)
    ]


def make_registry(store: Path, arm: str) -> Registry:
    """A registry on a fresh SQLite store in `store`: as deployed ("on"), or with personal
    fields in clear and no at-rest cipher ("off")."""
    settings = Settings.from_env({"VAR_DIR": str(store), "PSEUDONYM_SECRET": "bench-sealing"})
    if arm == "on":
        return Registry(settings)
    with mock.patch.object(application, "store_cipher_env", lambda kek: {}):
        registry = Registry(settings)
    registry.sealer = ClearSealer()  # type: ignore[assignment]
    return registry


def one_round(arm: str, store: Path, cmds: list[RegisterCitizen], end: float) -> float | None:
    """Commands/s of `cmds` through `handle_batch` in batches of BATCH; None if `end` passed."""
    registry = make_registry(store, arm)
    try:
        began = time.perf_counter()
        for i in range(0, len(cmds), BATCH):
            if time.monotonic() > end:
                return None
            _check_results(registry.handle_batch(cmds[i : i + BATCH]))  # type: ignore[arg-type]
        elapsed = time.perf_counter() - began
        check_arm(registry, arm, cmds[0])
    finally:
        registry.close()
        shutil.rmtree(store, ignore_errors=True)
    return len(cmds) / elapsed


def _check_results(results: list[Outcome | Exception]) -> None:
    for result in results:
        if isinstance(result, Exception) or result.duplicate:
            raise BenchError(f"sealing phase: a registration was not applied: {result!r}")


def check_arm(registry: Registry, arm: str, cmd: RegisterCitizen) -> None:
    """BenchError unless the arm stored what it should: sealed and ciphered, or neither."""
    account = registry.account(cmd.citizen_id)
    stored = str(account.registration["sealed_full_name"]) if account else ""
    cipher = registry.mapper.cipher is not None
    if arm == "on":
        opened = registry.reveal(account.id, stored) if account else ""
        ok = cipher and stored.startswith(PREFIX) and opened == cmd.full_name
    else:
        ok = not cipher and stored == cmd.full_name
    if not ok:
        raise BenchError(f"sealing phase: arm {arm!r} stored {stored!r} (cipher {cipher})")


def sealing_bench(root: Path, m: int, deadline: Deadline) -> dict[str, Any]:
    """Both arms, ROUNDS each, alternating, each round on a fresh store under `root`."""
    cmds, end = commands(m), deadline.within(BUDGET_S)
    rates: dict[str, list[float]] = {arm: [] for arm in ARMS}
    for r in range(1, ROUNDS + 1):
        for arm in ARMS:
            rate = one_round(arm, root / f"{arm}-{r}", cmds, end)
            if rate is None:
                return summary(rates, m, timed_out=True)
            rates[arm].append(rate)
            print(f"  round {r}, encryption {arm}: {rate:,.0f} commands/s", flush=True)
    return summary(rates, m, timed_out=False)


def summary(rates: dict[str, list[float]], m: int, timed_out: bool) -> dict[str, Any]:
    """Per-arm median commands/s and the ratio on/off (None until both arms have a round)."""
    medians = {arm: statistics.median(r) if r else None for arm, r in rates.items()}
    on, off = medians["on"], medians["off"]
    return {
        "m": m, "batch": BATCH, "rounds": rates, "timed_out": timed_out,
        "commands_per_s_on": on, "commands_per_s_off": off,
        "ratio_on_off": on / off if on and off else None,
    }  # fmt: skip


def sealing_problems(figures: dict[str, Any]) -> list[str]:
    """What the sealing phase got wrong: it ran out of time before every round was done."""
    if not figures["timed_out"]:
        return []
    done = {arm: len(r) for arm, r in figures["rounds"].items()}
    return [f"sealing phase timed out after rounds {done} of {ROUNDS} each"]
