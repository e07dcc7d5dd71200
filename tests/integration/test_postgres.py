"""Storage and assembly on both databases: SQLite (embedded default) and a real PostgreSQL server."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from pydicom.uid import generate_uid
from sqlalchemy import func, select

from db import repository
from db.models import Instance, Series, SeriesState, Study
from db.session import session_scope
from dicomnode.store.storage import store_instance
from tests.dicom_builders import molli_series, mr_image, write_part10
from tests.integration.conftest import RunningNode, wait_until

pytestmark = pytest.mark.integration


def test_storescu_store_resend_and_version(
    node_factory: Callable[..., RunningNode], database_url: str, tmp_path: Path
) -> None:
    node = node_factory(database_url=database_url)
    datasets = molli_series()
    files = [write_part10(ds, tmp_path / f"{i}.dcm") for i, ds in enumerate(datasets)]

    assert node.storescu(files).returncode == 0
    assert node.storescu(files).returncode == 0
    changed = datasets[0].copy()
    changed.file_meta = datasets[0].file_meta
    changed.ImageComments = "corrected"
    assert node.storescu([write_part10(changed, tmp_path / "changed.dcm")]).returncode == 0

    with session_scope(node.session_factory) as session:
        assert session.scalar(select(func.count()).select_from(Instance)) == 8
        series = session.scalars(select(Series)).one()
        assert (series.revision, series.state, series.n_instances) == (1, SeriesState.COMPLETE, 8)
        versions = sorted(session.scalars(select(Instance.version)))
        assert session.scalars(select(Study)).one().patient_name == "Doe^Jane"
    assert versions == [1] * 7 + [2]
    # Revision 1 is handed on once the study settles; revision 0 too when the assembler saw it before the changed
    # instance re-opened the series (the sends follow each other within moments), never twice.
    assert wait_until(lambda: node.completed[-1:] == [(series.id, 1)], timeout_s=10)
    assert node.completed in ([(series.id, 1)], [(series.id, 0), (series.id, 1)])


def test_quiet_period_completion(
    node_factory: Callable[..., RunningNode], database_url: str, tmp_path: Path
) -> None:
    node = node_factory(database_url=database_url, series={"quiet_seconds": 0.3})
    files = [
        write_part10(ds, tmp_path / f"{i}.dcm")
        for i, ds in enumerate(molli_series(images_in_acquisition=False))
    ]

    assert node.storescu(files).returncode == 0

    assert wait_until(lambda: len(node.completed) == 1, timeout_s=5)


def test_concurrent_stores_race_for_one_study(
    node_factory: Callable[..., RunningNode], database_url: str
) -> None:
    node = node_factory(database_url=database_url)
    study_uid = generate_uid()
    series_uids = [generate_uid() for _ in range(3)]
    datasets = [mr_image(study_uid=study_uid, series_uid=series_uids[i % 3], seed=i) for i in range(30)]

    def store(ds):  # noqa: ANN001, ANN202
        return store_instance(
            ds,
            calling_ae="SCANNER",
            calling_host="127.0.0.1",
            settings=node.settings,
            session_factory=node.session_factory,
        )

    with ThreadPoolExecutor(max_workers=6) as pool:
        results = list(pool.map(store, datasets))

    assert all(r.created for r in results)
    with session_scope(node.session_factory) as session:
        assert session.scalar(select(func.count()).select_from(Study)) == 1
        counts = sorted(s.n_instances for s in session.scalars(select(Series)))
        assert counts == [10, 10, 10]
        series_id = results[0].series_id
        # Exactly one of several competing completions wins.
        wins = [repository.mark_series_complete(session, series_id=series_id, revision=0) for _ in range(3)]
    assert wins == [True, False, False]
