"""Series assembly: decide when a series is complete and hand it on, at once when the protocol says so.

State moves (all in the database, so several threads or processes agree and a restart loses nothing):

- storage counts each new instance and re-opens a series that was no longer RECEIVING (``revision + 1``) in the
  same transaction that records the instance;
- :meth:`Assembler.note_instance` completes a series the moment it holds its expected number of instances, and
  completes the raw series of a study as soon as a derived series (map, MOCO, fit parameters) starts arriving,
  since scanners send maps only after the raw images they come from;
- a background thread completes RECEIVING series quiet for ``settings.series.quiet_seconds``.

Completion is a conditional update (RECEIVING at this revision -> COMPLETE), so ``on_complete(series_id,
revision)`` runs exactly once per revision in normal operation. After a crash, :meth:`Assembler.start` calls it
again for series left COMPLETE; the processing side keys its jobs by (series, revision, kind), so that is harmless.
Every series is handed on, whatever its role: the processing side decides what a role needs and sets the final
state (DONE, FAILED, or STORED for nothing to analyse).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import timedelta

from sqlalchemy.orm import Session, sessionmaker

from config.settings import Settings
from db import repository
from db.models import SeriesRole, SeriesState, utcnow
from db.session import session_scope
from dicomnode.store.storage import StoredInstance

LOGGER = logging.getLogger(__name__)

POLL_INTERVAL_S = 0.2
RAW_ROLES = frozenset(
    {SeriesRole.RAW_IR, SeriesRole.RAW_IR_PHASE, SeriesRole.T2_PREP, SeriesRole.T2_PREP_PHASE}
)
DERIVED_ROLES = frozenset({SeriesRole.MOCO, SeriesRole.T1_MAP, SeriesRole.T2_MAP, SeriesRole.FIT_QUALITY})

OnComplete = Callable[[int, int], object]  # (series id, revision); what it returns is not used


class Assembler:
    """Decides completeness of received series and calls ``on_complete(series_id, revision)`` for each.

    Parameters
    ----------
    session_factory : sessionmaker
    settings : Settings
        ``settings.series.quiet_seconds`` is the quiet period.
    on_complete : callable
        Called with (series id, revision) once a series is COMPLETE; it should only enqueue work (it runs in the
        storing association's thread or the assembler's thread). Exceptions are logged; the series stays
        COMPLETE and is handed on again at the next start.
    """

    def __init__(
        self, session_factory: sessionmaker[Session], settings: Settings, on_complete: OnComplete
    ) -> None:
        self._session_factory = session_factory
        self._quiet = timedelta(seconds=settings.series.quiet_seconds)
        self._on_complete = on_complete
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def note_instance(self, stored: StoredInstance) -> None:
        """Complete the instance's series now if it holds its expected count; an identical re-send does nothing.

        A derived series (map, MOCO, fit parameters) arriving also completes the study's raw series that were
        already quiet when it started (no waiting for the quiet period).
        """
        if not (stored.created or stored.changed):
            return
        with session_scope(self._session_factory) as session:
            series = repository.get_series(session, series_id=stored.series_id)
            if series is None or series.state != SeriesState.RECEIVING:
                return
            ready = []
            if series.expected_instances is not None and series.n_instances >= series.expected_instances:
                ready.append((series.id, series.revision))
            if series.role in DERIVED_ROLES:
                ready += repository.receiving_series_in_study(
                    session,
                    study_id=series.study_id,
                    roles=RAW_ROLES,
                    received_before=repository.as_utc(series.first_received_at),
                )
        for series_id, revision in ready:
            self._complete(series_id, revision, reason="protocol")

    def start(self) -> None:
        """Hand on series left COMPLETE before a restart, complete those already due, then watch quiet periods."""
        if self._thread is not None:
            return
        with session_scope(self._session_factory) as session:
            left = [
                (s.id, s.revision)
                for s in repository.series_in_states(session, states=[SeriesState.COMPLETE])
            ]
        for series_id, revision in left:
            LOGGER.info(
                "series %d revision %d was complete before the restart: handing it on again",
                series_id,
                revision,
            )
            self._hand_on(series_id, revision)
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="series-assembler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the background thread (waits for the current check to finish)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def check_now(self) -> None:
        """Complete every series that is due: expected count reached or quiet for the quiet period."""
        with session_scope(self._session_factory) as session:
            due = repository.series_expected_reached(session)
            quiet = repository.series_quiet_since(session, before=utcnow() - self._quiet)
        for series_id, revision in due:
            self._complete(series_id, revision, reason="protocol")
        for series_id, revision in quiet:
            self._complete(series_id, revision, reason="quiet period")

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.check_now()
            except Exception:  # the database may be briefly unavailable; keep watching
                LOGGER.exception("series assembly check failed")
            self._stop.wait(POLL_INTERVAL_S)

    def _complete(self, series_id: int, revision: int, *, reason: str) -> None:
        with session_scope(self._session_factory) as session:
            won = repository.mark_series_complete(session, series_id=series_id, revision=revision)
        if won:
            LOGGER.info("series %d revision %d complete (%s)", series_id, revision, reason)
            self._hand_on(series_id, revision)

    def _hand_on(self, series_id: int, revision: int) -> None:
        try:
            self._on_complete(series_id, revision)
        except Exception:
            LOGGER.exception(
                "handing on series %d revision %d failed; it is retried at the next start",
                series_id,
                revision,
            )
