"""Who may do what on the broker: the SCRAM users and the ACLs of one deployment.

The broker (infra/kafka/broker.sh) authenticates every client with SASL/SCRAM-SHA-512 and
authorizes it with Kafka's StandardAuthorizer: nothing is allowed that no ACL allows. Each
component connects as its own principal (services.settings.KAFKA_PRINCIPALS); `grants` lists
what each may do on the deployment's topics (literal names, from the settings):

- relay: write the public topic and the access topic under its transactional id;
- projector: read both with its consumer groups, write their dead-letter topics;
- signer: write and read the checkpoint topic;
- subscriber: read the public topic and the checkpoints; its groups and its own topics are
  named `subscriber.*`; never the access topic;
- admin: super user (the broker's own principal), used by operators and this tool.

    python -m services.kafka_acl grant      # the ACLs of the deployment in the environment
    python -m services.kafka_acl show       # the ACLs the broker holds for it
    python -m services.kafka_acl users --credentials FILE   # add/update SCRAM users
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kafka.admin import (
    ACL,
    ACLFilter,
    ACLOperation,
    ACLPermissionType,
    ACLResourcePatternType,
    KafkaAdminClient,
    ResourcePattern,
    ResourcePatternFilter,
    ResourceType,
    ScramMechanism,
    UserScramCredentialUpsertion,
)

from services.kafka import Connection, connect_as, read_credentials
from services.settings import KAFKA_PRINCIPALS, Settings

log = logging.getLogger(__name__)

# Names a subscriber may choose for its consumer groups and its own (dead-letter) topics.
SUBSCRIBER_PREFIX = "subscriber."

READ = (ACLOperation.READ, ACLOperation.DESCRIBE)
PRODUCE = (ACLOperation.WRITE, ACLOperation.DESCRIBE)
MAKE = (ACLOperation.CREATE, ACLOperation.DESCRIBE_CONFIGS)  # ensure_topic + retention check


@dataclass(frozen=True)
class Grant:
    principal: str
    resource: ResourceType
    name: str
    operations: tuple[ACLOperation, ...]
    pattern: ACLResourcePatternType = ACLResourcePatternType.LITERAL

    def acls(self) -> list[ACL]:
        where = ResourcePattern(self.resource, self.name, self.pattern)
        return [
            ACL(f"User:{self.principal}", "*", op, ACLPermissionType.ALLOW, where)
            for op in self.operations
        ]


def grants(settings: Settings) -> list[Grant]:
    """Every permission of the deployment's principals (nothing else is allowed)."""
    topic, access = settings.kafka_topic, settings.access_topic
    topic_, group_ = ResourceType.TOPIC, ResourceType.GROUP
    prefixed = ACLResourcePatternType.PREFIXED
    return [
        # relay: it reads its own tail back to know where it stopped
        Grant("relay", topic_, topic, PRODUCE + MAKE + (ACLOperation.READ,)),
        Grant("relay", topic_, access, PRODUCE + MAKE + (ACLOperation.READ,)),
        Grant("relay", ResourceType.TRANSACTIONAL_ID, settings.relay_transactional_id, PRODUCE),
        # projector (and the rebuild, and the dead-letter tool)
        Grant("projector", topic_, topic, READ + MAKE),
        Grant("projector", topic_, access, READ + MAKE),
        Grant("projector", topic_, settings.dlq_topic, PRODUCE + MAKE + (ACLOperation.READ,)),
        Grant("projector", topic_, f"{access}.dlq", PRODUCE + MAKE + (ACLOperation.READ,)),
        Grant("projector", group_, settings.projector_group, READ),
        Grant("projector", group_, f"{settings.projector_group}.access", READ),
        # signer
        Grant("signer", topic_, settings.checkpoint_topic, PRODUCE + READ + MAKE),
        # subscriber: the public record and the signed checkpoints, read only
        Grant("subscriber", topic_, topic, READ),
        Grant("subscriber", topic_, settings.checkpoint_topic, READ),
        Grant("subscriber", group_, SUBSCRIBER_PREFIX, READ, prefixed),
        Grant("subscriber", topic_, SUBSCRIBER_PREFIX, PRODUCE + MAKE + READ, prefixed),
    ]


def grant(settings: Settings) -> int:
    """Create the deployment's ACLs (as admin; existing ones stay as they are); returns how
    many bindings were asked for. A broker without authorization needs none: 0."""
    if settings.kafka_security_protocol == "PLAINTEXT":
        return 0
    acls = [acl for item in grants(settings) for acl in item.acls()]
    admin = KafkaAdminClient(**connect_as(settings, "admin"))
    try:
        result = admin.create_acls(acls)
    finally:
        admin.close()
    failed = result.get("failed") or []
    if failed:
        raise RuntimeError(f"the broker refused {len(failed)} ACLs, the first: {failed[0]}")
    log.info("granted %d ACLs for topic %s", len(acls), settings.kafka_topic)
    return len(acls)


def held(settings: Settings) -> list[tuple[str, str, str, str, str]]:
    """(principal, resource type, pattern, name, operation) of the broker's ACLs, sorted."""
    anything = ResourcePatternFilter(ResourceType.ANY, None, ACLResourcePatternType.ANY)
    query = ACLFilter(None, None, ACLOperation.ANY, ACLPermissionType.ANY, anything)
    admin = KafkaAdminClient(**connect_as(settings, "admin"))
    try:
        acls, error = admin.describe_acls(query)
    finally:
        admin.close()
    rows = {
        (acl.principal, acl.resource_pattern.resource_type.name,
         acl.resource_pattern.pattern_type.name, acl.resource_pattern.resource_name,
         acl.operation.name)
        for acl in acls
    }  # fmt: skip
    return sorted(rows)


def add_users(connection: Connection, passwords: Mapping[str, str]) -> list[str]:
    """Create or update the SCRAM-SHA-512 users `passwords` names; returns their names."""
    users = [
        UserScramCredentialUpsertion(name, ScramMechanism.SCRAM_SHA_512, secret)
        for name, secret in sorted(passwords.items())
    ]
    admin = KafkaAdminClient(**connection)
    try:
        answer: Any = admin.alter_user_scram_credentials(users)
    finally:
        admin.close()
    errors = _user_errors(answer)
    if errors:
        raise RuntimeError(f"the broker refused users: {errors}")
    return [user.user for user in users]


def _user_errors(answer: Any) -> list[str]:
    results: Iterable[Any] = getattr(answer, "results", None) or []
    return [
        f"{item.user}: {item.error_message or item.error_code}"
        for item in results
        if getattr(item, "error_code", 0)
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m services.kafka_acl",
        description="The broker's SCRAM users and the ACLs of this deployment (settings from "
        "the environment: KAFKA_BOOTSTRAP, KAFKA_TOPIC, PROJECTOR_GROUP, KAFKA_CREDENTIALS_FILE "
        "or KAFKA_PASSWORD_ADMIN). Connects as the admin principal.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("grant", help="create this deployment's ACLs (idempotent)")
    commands.add_parser("show", help="list the ACLs the broker holds")
    users = commands.add_parser(
        "users", help="create or update the SCRAM users of a credentials file (principal=password)"
    )
    users.add_argument("--credentials", type=Path, required=True)
    users.add_argument("--bootstrap", default=None, help="default: KAFKA_BOOTSTRAP")
    users.add_argument(
        "--unauthenticated",
        action="store_true",
        help="connect without SASL (a broker being migrated from an unsecured start)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("kafka").setLevel(logging.WARNING)
    if args.command == "grant":
        settings = Settings.from_env()
        print(f"granted {grant(settings)} ACLs for topic {settings.kafka_topic}")
    elif args.command == "show":
        for row in held(Settings.from_env()):
            print(" ".join(row))
    else:
        passwords = read_credentials(args.credentials)
        unknown = set(passwords) - set(KAFKA_PRINCIPALS)
        if unknown or not passwords:
            print(f"{args.credentials}: expected principal=password lines for "
                  f"{', '.join(KAFKA_PRINCIPALS)}", file=sys.stderr)  # fmt: skip
            return 2
        connection: dict[str, Any] = {"bootstrap_servers": args.bootstrap}
        if not args.unauthenticated:  # an operator adding users to a running, secured broker
            settings = Settings.from_env()
            connection = {**connect_as(settings, "admin"), **connection}
            connection["bootstrap_servers"] = args.bootstrap or settings.kafka_bootstrap
        print("SCRAM users: " + ", ".join(add_users(connection, passwords)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
