"""Tables of the node: what was received, what is being done with it, and what goes out."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import Enum

from sqlalchemy import JSON, Boolean, DateTime, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy import Enum as SqlEnum
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    pass


def _enum(enum_type: type[Enum]) -> SqlEnum:
    # Store the enum's value (readable in SQL, stable across renames of the Python member).
    return SqlEnum(enum_type, values_callable=lambda e: [m.value for m in e], native_enum=False, length=32)


class SeriesRole(str, Enum):
    """What a series is to the mapping workflow (decided by dicomnode.io.classify)."""

    RAW_IR = "raw_ir"  # inversion-recovery magnitude images (MOLLI, ShMOLLI, SASHA)
    RAW_IR_PHASE = "raw_ir_phase"
    T2_PREP = "t2_prep"
    T2_PREP_PHASE = "t2_prep_phase"
    MOCO = "moco"  # motion-corrected images
    T1_MAP = "t1_map"
    T2_MAP = "t2_map"
    FIT_QUALITY = "fit_quality"  # R2 / fit-parameter maps
    SEG = "seg"
    RTSTRUCT = "rtstruct"
    OTHER = "other"  # stored, not analysed


class SeriesState(str, Enum):
    RECEIVING = "receiving"
    COMPLETE = "complete"  # assembly decided the series is whole and queued its work
    DONE = "done"
    FAILED = "failed"
    STORED = "stored"  # nothing to analyse


class JobState(str, Enum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    # Waits for other series of its study, e.g. a reader's contours for the map they lie on; ``error`` says what.
    # Stored as VARCHAR without a CHECK constraint (``_enum``): a new state needs no migration.
    WAITING = "waiting"


class TransferState(str, Enum):
    PENDING = "pending"
    SENT = "sent"
    GIVEN_UP = "given_up"


class Study(Base):
    __tablename__ = "study"

    id: Mapped[int] = mapped_column(primary_key=True)
    study_instance_uid: Mapped[str] = mapped_column(String(64), unique=True)
    patient_id: Mapped[str] = mapped_column(String(64), default="")
    patient_name: Mapped[str] = mapped_column(String(324), default="")
    study_date: Mapped[str] = mapped_column(String(8), default="")
    study_description: Mapped[str] = mapped_column(String(64), default="")
    accession_number: Mapped[str] = mapped_column(String(16), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    series: Mapped[list[Series]] = relationship(back_populates="study", order_by="Series.series_number")


class Series(Base):
    __tablename__ = "series"

    id: Mapped[int] = mapped_column(primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("study.id"), index=True)
    series_instance_uid: Mapped[str] = mapped_column(String(64), unique=True)
    series_number: Mapped[int | None] = mapped_column(Integer)
    modality: Mapped[str] = mapped_column(String(16), default="")
    description: Mapped[str] = mapped_column(String(64), default="")
    manufacturer: Mapped[str] = mapped_column(String(64), default="")
    role: Mapped[SeriesRole] = mapped_column(_enum(SeriesRole), default=SeriesRole.OTHER)
    state: Mapped[SeriesState] = mapped_column(_enum(SeriesState), default=SeriesState.RECEIVING)
    # How many instances the protocol says the series has, when the tags tell (None: wait for the quiet period).
    expected_instances: Mapped[int | None] = mapped_column(Integer)
    n_instances: Mapped[int] = mapped_column(Integer, default=0)
    # Incremented whenever a late or changed instance re-opens a complete series; jobs are keyed by it.
    revision: Mapped[int] = mapped_column(Integer, default=0)
    calling_ae: Mapped[str] = mapped_column(String(16), default="")
    calling_host: Mapped[str] = mapped_column(String(255), default="")
    first_received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    last_received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    completed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    study: Mapped[Study] = relationship(back_populates="series")
    instances: Mapped[list[Instance]] = relationship(back_populates="series", order_by="Instance.instance_number")
    jobs: Mapped[list[Job]] = relationship(back_populates="series")


class Instance(Base):
    __tablename__ = "instance"

    id: Mapped[int] = mapped_column(primary_key=True)
    series_id: Mapped[int] = mapped_column(ForeignKey("series.id"), index=True)
    sop_instance_uid: Mapped[str] = mapped_column(String(64), unique=True)
    sop_class_uid: Mapped[str] = mapped_column(String(64))
    transfer_syntax_uid: Mapped[str] = mapped_column(String(64))
    instance_number: Mapped[int | None] = mapped_column(Integer)
    path: Mapped[str] = mapped_column(Text)  # relative to the storage root
    sha256: Mapped[str] = mapped_column(String(64))
    size_bytes: Mapped[int] = mapped_column(Integer)
    version: Mapped[int] = mapped_column(Integer, default=1)  # a re-sent instance with changed content gets +1
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    series: Mapped[Series] = relationship(back_populates="instances")


class Job(Base):
    """One unit of analysis; ``key`` makes queueing idempotent (same series revision and kind: same job)."""

    __tablename__ = "job"

    id: Mapped[int] = mapped_column(primary_key=True)
    key: Mapped[str] = mapped_column(String(200), unique=True)
    kind: Mapped[str] = mapped_column(String(32))
    series_id: Mapped[int] = mapped_column(ForeignKey("series.id"), index=True)
    series_revision: Mapped[int] = mapped_column(Integer, default=0)
    state: Mapped[JobState] = mapped_column(_enum(JobState), default=JobState.QUEUED, index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    series: Mapped[Series] = relationship(back_populates="jobs")
    results: Mapped[list[Result]] = relationship(back_populates="job")


class Result(Base):
    """An object the node produced (a map series, later SR, SEG, SC), with its figures."""

    __tablename__ = "result"
    __table_args__ = (UniqueConstraint("job_id", "kind"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("job.id"), index=True)
    kind: Mapped[str] = mapped_column(String(32))  # e.g. "t1_map"
    output_series_uid: Mapped[str] = mapped_column(String(64), default="")
    paths: Mapped[list[str]] = mapped_column(JSON, default=list)  # relative to the storage root
    summary: Mapped[dict] = mapped_column(JSON, default=dict)  # figures (no patient data)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    job: Mapped[Job] = relationship(back_populates="results")
    transfers: Mapped[list[Transfer]] = relationship(back_populates="result")


class AnalysisUnit(Base):
    """The series of one study and map kind that show the same slices (raw images, the scanner's maps), analysed
    together once: the first job to insert the unit's key analyses it, the others find it taken.

    A unit that shares a series with an earlier one (the raw images came after the map was analysed, more images
    arrived) supersedes it: its outputs say so and the page shows the newest.
    """

    __tablename__ = "analysis_unit"

    id: Mapped[int] = mapped_column(primary_key=True)
    key: Mapped[str] = mapped_column(String(200), unique=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("study.id"), index=True)
    kind: Mapped[str] = mapped_column(String(8))  # "T1" or "T2"
    job_id: Mapped[int] = mapped_column(ForeignKey("job.id"), index=True)  # the job that analyses it
    members: Mapped[list[dict]] = mapped_column(JSON, default=list)  # [{"series_id", "revision", "role"}]
    supersedes_unit_id: Mapped[int | None] = mapped_column(ForeignKey("analysis_unit.id"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Transfer(Base):
    """One file to one peer; kept until delivered or given up."""

    __tablename__ = "transfer"
    __table_args__ = (UniqueConstraint("result_id", "path", "ae_title"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    result_id: Mapped[int] = mapped_column(ForeignKey("result.id"), index=True)
    path: Mapped[str] = mapped_column(Text)
    sop_instance_uid: Mapped[str] = mapped_column(String(64))
    ae_title: Mapped[str] = mapped_column(String(16))
    host: Mapped[str] = mapped_column(String(255))
    port: Mapped[int] = mapped_column(Integer)
    state: Mapped[TransferState] = mapped_column(_enum(TransferState), default=TransferState.PENDING, index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    last_error: Mapped[str] = mapped_column(Text, default="")
    sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    result: Mapped[Result] = relationship(back_populates="transfers")


class Reader(Base):
    """A person whose contours the node receives (trainee, expert, supervisor)."""

    __tablename__ = "reader"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(16), default="trainee")
    team: Mapped[str] = mapped_column(String(64), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ReaderRole(str, Enum):
    """What a reader is to the training programme; experts' contours make the reference."""

    TRAINEE = "trainee"
    EXPERT = "expert"
    SUPERVISOR = "supervisor"


class WebRole(str, Enum):
    """What a web user may see: a trainee their own results, a supervisor their teams', an admin everything."""

    ADMIN = "admin"
    SUPERVISOR = "supervisor"
    TRAINEE = "trainee"


class ReferencePolicy(str, Enum):
    """Which contour a reader is scored against (decided by dicomnode.analysis.reference)."""

    GOLD_STANDARD = "gold_standard"  # an uploaded expert contour named per case
    EXPERT_STAPLE = "expert_staple"  # STAPLE of the experts' contours
    CONSENSUS_MODEL = "consensus_model"  # the node's consensus segmentation model
    TEAM_AVERAGE = "team_average"  # STAPLE of the team-mates' contours


class ReaderAlias(Base):
    """A name as it arrives in DICOM (ContentCreatorName, OperatorsName, a series description's reader part)
    mapped to a reader; ``pattern`` is matched case-insensitively and may hold ``*`` and ``?`` wildcards."""

    __tablename__ = "reader_alias"

    id: Mapped[int] = mapped_column(primary_key=True)
    pattern: Mapped[str] = mapped_column(String(128), unique=True)
    reader_id: Mapped[int] = mapped_column(ForeignKey("reader.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    reader: Mapped[Reader] = relationship()


class TrainingSet(Base):
    """Studies a supervisor marked as a training set, with the accreditation criteria for it."""

    __tablename__ = "training_set"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    # Cases without experts' contours are scored against the consensus model when set.
    auto_consensus: Mapped[bool] = mapped_column(Boolean, default=True)
    criteria: Mapped[dict] = mapped_column(JSON, default=dict)  # see reports.programme.training_sets.Criteria
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    cases: Mapped[list[TrainingCase]] = relationship(
        back_populates="training_set", order_by="TrainingCase.id", cascade="all, delete-orphan"
    )


class TrainingCase(Base):
    """One study of a training set; ``reference_policy`` None means automatic (gold standard, else the experts'
    STAPLE, else the consensus model when the set allows it)."""

    __tablename__ = "training_case"
    __table_args__ = (UniqueConstraint("training_set_id", "study_instance_uid"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    training_set_id: Mapped[int] = mapped_column(ForeignKey("training_set.id", ondelete="CASCADE"), index=True)
    study_instance_uid: Mapped[str] = mapped_column(String(64), index=True)
    reference_policy: Mapped[str | None] = mapped_column(String(32))  # a ReferencePolicy value
    gold_standard_reader: Mapped[str | None] = mapped_column(String(64))
    label: Mapped[str] = mapped_column(String(64), default="")

    training_set: Mapped[TrainingSet] = relationship(back_populates="cases")


class Accreditation(Base):
    """The date a reader first met a training set's criteria (kept when later attempts fall below them)."""

    __tablename__ = "accreditation"
    __table_args__ = (UniqueConstraint("reader_id", "training_set_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    reader_id: Mapped[int] = mapped_column(ForeignKey("reader.id", ondelete="CASCADE"), index=True)
    training_set_id: Mapped[int] = mapped_column(ForeignKey("training_set.id", ondelete="CASCADE"), index=True)
    met_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    criteria: Mapped[dict] = mapped_column(JSON, default=dict)  # the criteria as they were when met


class WebUser(Base):
    """A person who may log in to the web page; the password is kept only as a salted scrypt hash."""

    __tablename__ = "web_user"

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    role: Mapped[str] = mapped_column(String(16), default=WebRole.ADMIN.value, server_default=WebRole.ADMIN.value)
    # The reader a trainee (or a supervisor who also reads) is; their results are the ones shown to them.
    reader_id: Mapped[int | None] = mapped_column(
        ForeignKey("reader.id", name="fk_web_user_reader_id", ondelete="SET NULL"), index=True
    )



class WebSession(Base):
    """A logged-in browser: its cookie's token is kept only as a SHA-256 digest, and deleting the row (logout,
    a new password, the user's removal) ends the session at once."""

    __tablename__ = "web_session"

    id: Mapped[int] = mapped_column(primary_key=True)
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[int] = mapped_column(
        ForeignKey("web_user.id", name="fk_web_session_user_id", ondelete="CASCADE"), index=True
    )
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)

# Indexes of the admin page's search and filters and of the health check (migration 0004).
Index("ix_study_patient_id", Study.patient_id)
Index("ix_study_accession_number", Study.accession_number)
Index("ix_study_study_date", Study.study_date)
Index("ix_series_state_study_id", Series.state, Series.study_id)
Index("ix_job_started_at", Job.started_at)
Index("ix_transfer_ae_title", Transfer.ae_title)


class RefusedInstance(Base):
    """A re-send of a known SOP Instance UID under another Patient ID or Study Instance UID, refused with 0xA900
    while the stored instance stayed as it was (migration 0006). UIDs, AE title and host only: no patient data."""

    __tablename__ = "refused_instance"

    id: Mapped[int] = mapped_column(primary_key=True)
    sop_instance_uid: Mapped[str] = mapped_column(String(64))
    instance_id: Mapped[int | None] = mapped_column(ForeignKey("instance.id"))
    stored_study_instance_uid: Mapped[str] = mapped_column(String(64))
    sent_study_instance_uid: Mapped[str] = mapped_column(String(64))
    patient_id_differs: Mapped[bool] = mapped_column(Boolean)
    calling_ae: Mapped[str] = mapped_column(String(16))
    calling_host: Mapped[str] = mapped_column(String(255))
    refused_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
