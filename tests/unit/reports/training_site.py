"""A node database filled by the real reader scoring of a phantom training set, and web users of each role.

Two cases with three experts each and three trainees on two attempts each (:mod:`phantom.training_set`) are stored
as the Storage SCP stores them and every trainee's contour series is scored by the reader job; then the
supervisor's view of the programme is set up through :mod:`reports.programme` (teams, a training set with
criteria) and web users are linked to readers: ``admin``, ``sup_north`` (supervisor of team north), ``trainee``
(the improving trainee) and ``lonely`` (a trainee user of the persistent trainee, in team north too).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from skimage.measure import find_contours
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from config import load_settings
from config.settings import Settings
from db import migrate
from db.models import Series
from db.session import make_engine, make_session_factory
from dicomnode.io.contours import ImageGeometry, Structure, read_seg
from dicomnode.jobs.creation import enqueue_series
from dicomnode.jobs.reader_job import run_reader_job
from dicomnode.store.storage import store_instance
from phantom.training_set import TrainingSetOutcome, generate_training_set
from reports.programme import people, training_sets
from reports.programme.training_sets import Criteria
from reports.web.users import add_user

PASSWORD = "training-pass-1"
TEAM_NORTH, TEAM_SOUTH = "north", "south"
IMPROVING, PERSISTENT, SHIFTED = "trainee_improving", "trainee_persistent", "trainee_shifted"
SUPERVISOR_READER = "Dr North"
TRAINING_SET = "phantom MOLLI"
#: Web users: name -> (web role, reader or None).
USERS = {
    "admin": ("admin", None),
    "sup_north": ("supervisor", SUPERVISOR_READER),
    "trainee": ("trainee", IMPROVING),
    "lonely": ("trainee", PERSISTENT),
}


@dataclass(frozen=True)
class TrainingSite:
    settings: Settings
    session_factory: sessionmaker[Session]
    outcome: TrainingSetOutcome


class _NoQueue:
    def enqueue_job(self, job_id: int) -> None:
        pass

    def enqueue_delivery(self, transfer_id: int, *, delay_s: float = 0.0) -> None:
        pass


def _series_key(factory: sessionmaker[Session], path: Path) -> tuple[int, int]:
    uid = str(pydicom.dcmread(path, stop_before_pixels=True).SeriesInstanceUID)
    with factory() as session:
        series = session.scalars(select(Series).where(Series.series_instance_uid == uid)).one()
        return series.id, series.revision


def build_training_site(folder: Path, *, n_cases: int = 2, n_attempts: int = 2) -> Iterator[TrainingSite]:
    """Generate, store and score the phantom set under ``folder``; the site, its engine disposed afterwards."""
    outcome = generate_training_set(folder / "phantom", n_cases=n_cases, n_attempts=n_attempts, seed=3)
    settings = load_settings(storage={"path": folder / "data", "min_free_mb": 1})
    settings.storage_root.mkdir(parents=True)
    engine = make_engine(settings.database_url)
    migrate.upgrade(engine)
    factory = make_session_factory(engine)

    def store(paths: tuple[Path, ...] | list[Path]) -> None:
        for path in paths:
            store_instance(path.read_bytes(), calling_ae="PACS", calling_host="127.0.0.1", settings=settings,
                           session_factory=factory)

    for case in outcome.cases:
        store(list(case.map_paths))
    for submission in outcome.submissions:
        store(submission.paths)
        if submission.role != "trainee":
            continue
        series_id, revision = _series_key(factory, submission.paths[0])
        for job_id in enqueue_series(series_id, revision, session_factory=factory, sink=_NoQueue()):
            run_reader_job(job_id, settings=settings, session_factory=factory, enqueue_delivery=lambda _: None)

    with factory.begin() as session:
        for name, team in ((IMPROVING, TEAM_NORTH), (PERSISTENT, TEAM_NORTH), (SHIFTED, TEAM_SOUTH)):
            try:
                people.set_team(session, name, team)
            except people.PeopleError:  # not registered by the scoring (not expected): add them
                people.add_reader(session, name, team=team)
        people.add_reader(session, SUPERVISOR_READER, role="supervisor", team=TEAM_NORTH)
        training_sets.create_training_set(
            session, TRAINING_SET, [case.study_instance_uid for case in outcome.cases],
            description="mid-ventricular MOLLI phantoms",
            criteria=Criteria(min_mean_dice=0.8, max_abs_t1_difference_ms=40.0, last_cases=2),
        )
        for username, (role, reader) in USERS.items():
            add_user(session, username, PASSWORD)
            session.flush()
            people.link_user(session, username, reader, role=role)
    yield TrainingSite(settings, factory, outcome)
    engine.dispose()


def expert_borders(outcome: TrainingSetOutcome, case_index: int = 0) -> tuple[Dataset, np.ndarray, np.ndarray]:
    """A case's map image and its first expert's endocardium and epicardium as (x, y) pixel points (the borders
    of the expert's SEG masks), as an IDL SAVE file or a point list holds them."""
    case = outcome.cases[case_index]
    image = pydicom.dcmread(case.map_paths[0])
    expert = next(s for s in outcome.submissions if s.role == "expert" and s.case == case.label)
    masks = read_seg(pydicom.dcmread(expert.paths[0]), [ImageGeometry.from_dataset(image)], reader="expert")
    uid = str(image.SOPInstanceUID)
    cavity = masks.mask(Structure.CAVITY, uid)
    epicardium = cavity | masks.mask(Structure.MYOCARDIUM, uid)

    def border(mask: np.ndarray) -> np.ndarray:
        longest = max(find_contours(mask.astype(float), 0.5), key=len)
        return longest[:, ::-1]  # (row, column) -> (x, y)

    return image, border(cavity), border(epicardium)
