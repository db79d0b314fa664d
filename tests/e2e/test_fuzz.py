"""The contract fuzzer over the live API (API and relay as processes): every operation of the
OpenAPI document, requests valid and invalid by it, every schemathesis check and ours
(`tests/support/contract.py`); a fixed seed and a bounded number of cases per operation.

`make fuzz` runs the same checks for longer (FUZZ_SECONDS) with the schemathesis command line.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis

from tests.support import contract
from tests.support.api import Api, running_api
from tests.support.environment import TOKENS

MAX_EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "25"))

# The document as the API's code builds it (parametrizing needs it before any server runs);
# the first test checks that the live API serves exactly this one.
DOCUMENT = contract.document()
schema = schemathesis.openapi.from_dict(
    DOCUMENT, config=contract.config(TOKENS["admin"], MAX_EXAMPLES)
).exclude(path_regex=contract.NOT_FUZZED)


@pytest.fixture(scope="module")
def live(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    """One fresh deployment (relay and API) for the whole run."""
    with running_api(kafka_bootstrap, tmp_path_factory.mktemp("fuzz")) as api:
        yield api


def test_the_live_api_serves_the_fuzzed_document(live: Api) -> None:
    assert live.http.get("/openapi.json").json() == DOCUMENT


@schema.parametrize()
def test_every_operation_answers_as_its_document_says(case: Any, live: Api) -> None:
    case.call_and_validate(base_url=live.base)
