"""The read API's tests, on a Redis Cluster of three masters: lookups by canonical partition,
merged ids, sizes and member pages over every partition, erasure."""

from __future__ import annotations

import pytest

from tests.integration.test_api import *  # noqa: F403 (the same tests, on the cluster)

pytestmark = [pytest.mark.integration, pytest.mark.redis_cluster]
