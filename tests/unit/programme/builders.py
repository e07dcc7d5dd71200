"""A node database filled with reader-score results as the reader job records them (Result rows of kind
reader_score, their summary JSON made with the same models), for the training programme's tests."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from db.migrate import upgrade
from db.models import Job, JobState, Result, Series, SeriesRole, SeriesState, Study
from db.session import make_engine, make_session_factory
from reports.result_summary import READER_SCORE_KIND, ReaderResultSummary, ReaderSliceFigures, summary_json

START = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)


@dataclass(frozen=True)
class SliceFigures:
    dice: float
    t1_difference_ms: float
    error_mode: str = "good"
    level: str = "mid"
    map_mean_ms: float = 1000.0
    segments_ms: dict[int, float] = field(default_factory=dict)
    peer_dice: dict[str, float] = field(default_factory=dict)
    reference: str = "staple"
    hausdorff_mm: float = 4.0
    mean_surface_distance_mm: float = 1.0
    wall_thickness_difference_mm: float = 0.3


class ProgrammeDatabase:
    """A SQLite node database and a writer of reader-score results into it."""

    def __init__(self, tmp_path: Path, url: str | None = None) -> None:
        self.engine = make_engine(url or f"sqlite:///{tmp_path / 'node.db'}")
        upgrade(self.engine)
        self.factory: sessionmaker[Session] = make_session_factory(self.engine)
        self._numbers = itertools.count(1)
        self._studies: dict[str, int] = {}

    def study(self, uid: str, description: str = "T1 mapping") -> int:
        if uid not in self._studies:
            with self.factory.begin() as session:
                study = Study(study_instance_uid=uid, patient_id="PID-SECRET", patient_name="Secret^Patient",
                              study_description=description)
                session.add(study)
                session.flush()
                self._studies[uid] = study.id
        return self._studies[uid]

    def score(self, reader: str, study_uid: str, at: datetime, slices: list[SliceFigures | None],
              *, rescored: bool = False) -> None:
        """Record one contour series of ``reader`` on the study received ``at``, scored per slice (None: a slice
        not scored); ``rescored``: an earlier score against an older reference is recorded first (superseded)."""
        study_id = self.study(study_uid)
        number = next(self._numbers)
        summary = summary_json(ReaderResultSummary(
            reader=reader, reference="expert consensus", reference_digest=f"digest-{number}",
            slices=[self._figures(figures, index) for index, figures in enumerate(slices)],
        ))
        stale = {**summary, "slices": [{**s, "dice_myocardium": 0.1} for s in summary["slices"]]}
        records = [(stale, at), (summary, at + timedelta(minutes=5))] if rescored else [(summary, at)]
        with self.factory.begin() as session:
            series = Series(study_id=study_id, series_instance_uid=f"2.25.{number}", series_number=100 + number,
                            modality="SEG", role=SeriesRole.SEG, state=SeriesState.DONE, first_received_at=at,
                            last_received_at=at)
            session.add(series)
            session.flush()
            for index, (record, created_at) in enumerate(records):
                job = Job(key=f"{series.series_instance_uid}/0/reader_score/{index}", kind=READER_SCORE_KIND,
                          series_id=series.id, state=JobState.DONE)
                session.add(job)
                session.flush()
                session.add(Result(job_id=job.id, kind=READER_SCORE_KIND, summary=record, created_at=created_at))

    @staticmethod
    def _figures(figures: SliceFigures | None, index: int) -> ReaderSliceFigures:
        uid = f"1.2.826.0.1.{index}"
        if figures is None:
            return ReaderSliceFigures(map_sop_instance_uid=uid, map_kind="T1", level="apical",
                                      status="not scored", notes=["no myocardium contour on the slice"])
        return ReaderSliceFigures(
            map_sop_instance_uid=uid, map_kind="T1", level=figures.level, status="scored",
            reference=figures.reference, reference_readers=["expert1", "expert2"],
            dice_myocardium=figures.dice, iou_myocardium=figures.dice / (2 - figures.dice), dice_cavity=0.9,
            hausdorff_mm=figures.hausdorff_mm, mean_surface_distance_mm=figures.mean_surface_distance_mm,
            map_difference_ms=figures.t1_difference_ms,
            wall_thickness_difference_mm=figures.wall_thickness_difference_mm, error_mode=figures.error_mode,
            map_mean_ms=figures.map_mean_ms,
            segment_map_differences_ms={str(n): v for n, v in figures.segments_ms.items()},
            peer_dice=figures.peer_dice,
            overlay=f"outputs/x/2.25.{index}/overlay.png",
        )
