"""Migration 0005 (training programme) on SQLite and on a real PostgreSQL server."""

from __future__ import annotations

import pytest

from tests.unit.db.programme_migration_checks import check_existing_users_become_admins_and_downgrade

pytestmark = pytest.mark.integration


def test_existing_users_become_admins_and_downgrade(database_url: str) -> None:
    check_existing_users_become_admins_and_downgrade(database_url)
