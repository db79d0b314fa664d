"""The contract fuzzer's setup, shared by the suite's fuzz test and `make fuzz`: its config and
the check it adds to schemathesis's own (importing this module registers it).

A request valid by the document may still be refused, but only for a rule the document can
only describe (a commune that must exist, digits that must agree with the date of birth, a time
after the campaign start): 422 with a code other than `invalid_request`. A 400 or a 422
`invalid_request` to a valid request means the document and the server disagree.
"""

from __future__ import annotations

from typing import Any

import schemathesis
from schemathesis.config import SchemathesisConfig

from services.api.app import create_app
from services.api.responses import SCHEMA_CODES
from services.settings import Settings
from tests.support.environment import deployment_env
from tests.support.processes import ROOT

# Statuses a request valid by the document may get: schemathesis's defaults, and 422 for the
# described rules (the check below tells those from the stated ones).
ACCEPTED = ["2xx", "3xx", "401", "403", "404", "409", "422", "429", "5xx"]
SEED = 14
NOT_FUZZED = "^/v1/feed$"  # an endless event stream: no response to check ever ends


def document() -> dict[str, Any]:
    """The OpenAPI document the API serves, built in this process (nothing started, nothing
    written): the same code makes it, whatever the deployment."""
    env = deployment_env(ROOT / "var", "127.0.0.1:9092", KAFKA_SECURITY_PROTOCOL="PLAINTEXT")
    settings = Settings.from_env(env)  # (PLAINTEXT: no broker is asked for ACLs)
    return create_app(settings).openapi()


class RefusedByStatedRule(AssertionError):
    """A request the document says is valid was refused for a rule the document states."""


@schemathesis.check
def valid_requests_break_only_described_rules(ctx: Any, response: Any, case: Any) -> None:
    """A positive case (valid by the document) refused with 400 or 422 `invalid_request`."""
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive:
        return
    if response.status_code not in (400, 422):
        return
    try:
        code = response.json()["error"]["code"]
    except (ValueError, KeyError, TypeError):
        code = None
    if response.status_code == 400 or code in SCHEMA_CODES or code is None:
        raise RefusedByStatedRule(
            f"valid by the document, refused with {response.status_code} {code}: "
            f"{response.text[:300]}"
        )


def config_dict(token: str, max_examples: int) -> dict[str, Any]:
    """The schemathesis configuration (the TOML file's keys) of a run as a bearer of `token`."""
    return {
        "headers": {"Authorization": f"Bearer {token}"},
        "seed": SEED,
        "checks": {"positive_data_acceptance": {"expected-statuses": ACCEPTED}},
        "generation": {"max-examples": max_examples, "database": "none"},
        "request-timeout": 30.0,
        "cache": {"enabled": False},  # no .schemathesis/ left in the checkout
    }


def config(token: str, max_examples: int) -> SchemathesisConfig:
    return SchemathesisConfig.from_dict(config_dict(token, max_examples))


def toml(token: str, max_examples: int) -> str:
    """The same configuration as TOML, for `schemathesis --config-file`."""
    data = config_dict(token, max_examples)
    return "\n".join(
        [
            f"seed = {data['seed']}",
            f"request-timeout = {data['request-timeout']}",
            f'headers = {{ Authorization = "Bearer {token}" }}',
            f"generation.max-examples = {max_examples}",
            'generation.database = "none"',
            "cache.enabled = false",
            "[checks.positive_data_acceptance]",
            "expected-statuses = [" + ", ".join(f'"{s}"' for s in ACCEPTED) + "]",
            "",
        ]
    )
