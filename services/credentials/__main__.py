"""Manage principals and their credentials: `python -m services.credentials --help`."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime

from services.credentials import (
    KINDS,
    ROLES,
    CredentialStore,
    Principal,
    open_credential_store,
)
from services.settings import Settings


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m services.credentials",
        description="Credentials of principals (operators, devices, services) in "
        "CREDENTIALS_STORE (default VAR_DIR/credentials.sqlite), or with EVENT_STORE=postgres "
        "in table principals of the event store's database and schema (POSTGRES_*). "
        "A token is printed once, when "
        "it is made (add, rotate); only its SHA-256 is stored. A revocation or rotation takes "
        "effect on the API's next request.",
    )
    sub = parser.add_subparsers(dest="action", required=True)
    add = sub.add_parser("add", help="add a principal and print its token (once)")
    add.add_argument("id", help="the principal's id, recorded as the actor of its events")
    add.add_argument("--role", required=True, choices=ROLES)
    add.add_argument("--kind", default="operator", choices=KINDS)
    add.add_argument("--station", default="", help="station id (required for role station)")
    add.add_argument("--communes", default="", help="comma-separated commune codes it serves")
    add.add_argument("--province", default="", help="province code (empty: the nation)")
    sub.add_parser("list", help="principals, roles, scopes, times (never a token or hash)")
    revoke = sub.add_parser("revoke", help="revoke a principal's credential now")
    revoke.add_argument("id")
    rotate = sub.add_parser("rotate", help="replace a principal's token; print the new one")
    rotate.add_argument("id")
    sub.add_parser(
        "starter",
        help=f"make run: add {STARTER.id} (a station device scoped to commune "
        f"{STARTER.communes[0]}) unless the store has it; print its token when added",
    )
    return parser


def _when(moment: float | None) -> str:
    return (
        "-" if moment is None else datetime.fromtimestamp(moment, UTC).isoformat(timespec="seconds")
    )


# The starter set's scoped credential (the role-named AUTH_TOKENS entries are nation-wide):
# an intake device of the Cam Ranh station serving commune 22420 of Khánh Hòa (56).
STARTER = Principal("dev-cam-ranh-01", "station", "device", "st-cam-ranh", ("22420",), "56")


def starter(store: CredentialStore) -> str:
    if any(p.id == STARTER.id for p, _, _ in store.list()):
        return (
            f"{STARTER.id}: added earlier (its token was shown then; "
            f"`python -m services.credentials rotate {STARTER.id}` for a new one)"
        )
    return f"{STARTER.id} (station {STARTER.station_id}, commune 22420): {store.add(STARTER)}"


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    store = open_credential_store(Settings.from_env())
    try:
        if args.action == "add":
            communes = tuple(c for c in args.communes.split(",") if c)
            principal = Principal(args.id, args.role, args.kind, args.station, communes,
                                  args.province)  # fmt: skip
            print(f"{args.id}: {store.add(principal)}")
        elif args.action == "starter":
            print(starter(store))
        elif args.action == "rotate":
            print(f"{args.id}: {store.rotate(args.id)}")
        elif args.action == "revoke":
            if not store.revoke(args.id):
                raise LookupError(f"no live principal {args.id!r}")
            print(f"{args.id}: revoked")
        else:
            for p, created, revoked in store.list():
                scope = f"station={p.station_id or '*'} communes={','.join(p.communes) or '*'}"
                print(f"{p.id}\t{p.role}\t{p.kind}\t{scope} province={p.province or '*'}"
                      f"\tcreated={_when(created)}\trevoked={_when(revoked)}")  # fmt: skip
    except (ValueError, LookupError) as exc:
        print(f"error: {exc}")
        return 1
    finally:
        store.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
