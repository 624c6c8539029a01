from __future__ import annotations

from typing import Any

import pytest
from api_cases import committed_crds


@pytest.fixture(scope="session")
def crds() -> dict[str, dict[str, Any]]:
    """Committed CRDs by kind."""
    return committed_crds()
