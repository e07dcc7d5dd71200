"""What the node holds and has to do, counted from its database (for ``myomap status``)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import InstrumentedAttribute, Session

from config import Settings
from db.models import Job, JobState, Series, SeriesState, Transfer, TransferState
from db.session import make_engine, make_session_factory


class StatusUnavailableError(RuntimeError):
    """The node's database cannot be read (not created yet, or not reachable)."""


@dataclass(frozen=True)
class NodeStatus:
    """Counts by state; every state of each enum is present (0 when none)."""

    series: dict[str, int]
    jobs: dict[str, int]
    transfers: dict[str, int]

    def to_json(self) -> dict[str, dict[str, int]]:
        return {"series": dict(self.series), "jobs": dict(self.jobs), "transfers": dict(self.transfers)}


def count_states(session: Session) -> NodeStatus:
    """Series, jobs and transfers counted by state."""

    def counts(column: InstrumentedAttribute[Enum], enum_type: type[Enum]) -> dict[str, int]:
        found = {state.value: 0 for state in enum_type}
        for state, count in session.execute(select(column, func.count()).group_by(column)):
            found[enum_type(state).value] = int(count)
        return found

    return NodeStatus(
        series=counts(Series.state, SeriesState),
        jobs=counts(Job.state, JobState),
        transfers=counts(Transfer.state, TransferState),
    )


def node_status(settings: Settings) -> NodeStatus:
    """Open the node's database read-only in spirit (no migration, nothing created) and count.

    Raises
    ------
    StatusUnavailableError
        If the SQLite file does not exist or the database cannot be queried.
    """
    url = settings.database_url
    if url.startswith("sqlite:///"):
        path = Path(url.removeprefix("sqlite:///"))
        if not path.is_file():
            raise StatusUnavailableError(f"no node database at {path}; start the node with `myomap serve` first")
    engine = make_engine(url)
    try:
        with make_session_factory(engine)() as session:
            return count_states(session)
    except SQLAlchemyError as error:
        raise StatusUnavailableError(f"cannot read the node database {engine.url!r}: {error}") from error
    finally:
        engine.dispose()
