"""Schemathesis against the running collector and read API, from their own OpenAPI schemas.

Requests that fit the schema and requests that break it, for every operation: none may
get a 5xx. `SCHEMA_EXAMPLES` sets the examples per operation and mode (`make chaos`: 200).
"""

from __future__ import annotations

import os

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode

from streams.tools.embedded import free_port
from tests.integration.conftest import wait_until_serving

pytestmark = pytest.mark.integration
EXAMPLES = int(os.environ.get("SCHEMA_EXAMPLES", "10"))


@pytest.fixture
def services(config, start_worker):
    """A collector (write key `wk`) and a read API (token `tk`): base URL and credentials."""
    ports = {"collector_port": free_port(), "api_port": free_port()}
    settings_ = config.model_copy(update={**ports, "write_keys": "wk", "api_tokens": "tk"})
    found = {}
    for command, port, auth in (
        ("collector", ports["collector_port"], {"auth": ("wk", "")}),
        ("api", ports["api_port"], {"headers": {"Authorization": "Bearer tk"}}),
    ):
        process = start_worker(settings_, command)
        url = f"http://127.0.0.1:{port}"
        wait_until_serving(f"{url}/readyz", process)
        found[command] = (url, auth, process)
    return found


@pytest.mark.parametrize("service", ["collector", "api"])
def test_no_request_the_schema_allows_or_forbids_gets_a_server_error(services, service):
    url, auth, process = services[service]
    schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
    session = requests.Session()
    if "auth" in auth:
        session.auth = auth["auth"]
    session.headers.update(auth.get("headers", {}))
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 4
    statuses: dict[str, set[int]] = {}
    for operation in operations:
        cases = st.one_of(
            operation.as_strategy(GenerationMode.POSITIVE),
            operation.as_strategy(GenerationMode.NEGATIVE),
        )

        @settings(
            max_examples=EXAMPLES * 2,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(case=cases)
        def call(case):
            answer = case.call(base_url=url, session=session, timeout=30)
            label = case.operation.label
            statuses.setdefault(label, set()).add(answer.status_code)
            assert answer.status_code < 500, (label, case.as_curl_command(), answer.text[:300])

        call()
    assert process.process.poll() is None
    assert any(200 <= code < 300 for codes in statuses.values() for code in codes), statuses
    assert any(400 <= code < 500 for codes in statuses.values() for code in codes), statuses
