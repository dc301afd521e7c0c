from __future__ import annotations

import pytest

from app.settings import Settings
from tests.services import ensure_services_up


@pytest.fixture(scope="session")
def settings() -> Settings:
    ensure_services_up()
    return Settings()
