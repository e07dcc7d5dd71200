"""Series assembly: decide when a series is complete and hand it on, at once when the protocol says so.

State moves (all in the database, so several threads or processes agree and a restart loses nothing):

- storage counts each new instance and re-opens a series that was no longer RECEIVING (``revision + 1``) in the
  same transaction that records the instance;
- :meth:`Assembler.note_instance` completes a series the moment it holds its expected number of instances;
- a background thread completes RECEIVING series quiet for ``settings.series.quiet_seconds``.

A series is complete by its own evidence only: another series arriving (a map after its raw images) never
completes it, since scanners sending slice by slice would otherwise hand on other slices' raw series half sent.

A complete series of a mapping role (raw images or a scanner's map) is handed on once its study has settled: no
mapping series of the study is still receiving and none received an image for ``settings.series.pairing_seconds``.
The raw images and the map of one slice then reach the processing side together and are analysed once
(:mod:`dicomnode.io.slice_groups`). Other series (contours, fit-quality maps) are handed on at once.

Completion is a conditional update (RECEIVING at this revision -> COMPLETE), so ``on_complete(series_id,
revision)`` runs exactly once per revision in normal operation. After a crash, :meth:`Assembler.start` calls it
again for series left COMPLETE; the processing side keys its jobs by (series, revision, kind), so that is harmless.
Every series is handed on, whatever its role: the processing side decides what a role needs and sets the final
state (DONE, FAILED, or STORED for nothing to analyse).
"""

from __future__ import annotations

import logging
import math
import threading
import time
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
#: While checks fail (a full disk, the database away) each wait doubles up to this, and a failure that goes on
#: is logged again at most once per :data:`FAILURE_LOG_INTERVAL_S`, not at every poll.
FAILING_POLL_MAX_S = 5.0
FAILURE_LOG_INTERVAL_S = 60.0
#: Past a study's pairing wait, when the check after a mapping series completed runs (clocks of the database and
#: of this process differ by the time a commit takes).
SETTLE_MARGIN_S = 0.01
#: Roles handed on only when their study has settled (the raw images and maps that are analysed together).
MAPPING_ROLES = frozenset({SeriesRole.RAW_IR, SeriesRole.T2_PREP, SeriesRole.T1_MAP, SeriesRole.T2_MAP})

OnComplete = Callable[[int, int], object]  # (series id, revision); what it returns is not used


class Assembler:
    """Decides completeness of received series and calls ``on_complete(series_id, revision)`` for each.

    Parameters
    ----------
    session_factory : sessionmaker
    settings : Settings
        ``settings.series.quiet_seconds`` is the quiet period, ``settings.series.pairing_seconds`` how long a study
        must have received no mapping image before its mapping series are handed on.
    on_complete : callable
        Called with (series id, revision) once a series is COMPLETE; it should only enqueue work (it runs in the
        storing association's thread or the assembler's thread). Exceptions are logged; the series stays
        COMPLETE and is handed on again at the next start.
    on_mapping_image : callable, optional
        Called, in the storing association's thread, for each new image of a mapping series still receiving:
        its analysis is on its way (the node holds background work back meanwhile).
    """

    def __init__(
        self, session_factory: sessionmaker[Session], settings: Settings, on_complete: OnComplete,
        on_mapping_image: Callable[[], object] | None = None,
    ) -> None:
        self._session_factory = session_factory
        self._quiet = timedelta(seconds=settings.series.quiet_seconds)
        self._pairing = timedelta(seconds=settings.series.pairing_seconds)
        # Mapping series (and revisions) this process handed on; a restart hands the COMPLETE ones on again.
        self._handed_on: set[tuple[int, int]] = set()
        self._on_complete = on_complete
        self._on_mapping_image = on_mapping_image
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # A mapping series completed: check again when its study may have settled, not at the next poll.
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._next_check_at = math.inf  # time.monotonic() of the earliest such check

    def note_instance(self, stored: StoredInstance) -> None:
        """Complete the instance's series now if it holds its expected count; an identical re-send does nothing."""
        if not (stored.created or stored.changed):
            return
        if stored.arrival is not None:  # the series as storing left it: no need to read it again
            arrival = stored.arrival
            mapping = arrival.role in MAPPING_ROLES
            due = arrival.expected_instances is not None and arrival.n_instances >= arrival.expected_instances
            if mapping and self._on_mapping_image is not None:
                self._on_mapping_image()
            if due:
                self._complete(stored.series_id, arrival.revision, reason="protocol")
            return
        with session_scope(self._session_factory) as session:
            series = repository.get_series(session, series_id=stored.series_id)
            if series is None or series.state != SeriesState.RECEIVING:
                return
            mapping = series.role in MAPPING_ROLES
            due = series.expected_instances is not None and series.n_instances >= series.expected_instances
            ready = (series.id, series.revision)
        if mapping and self._on_mapping_image is not None:
            self._on_mapping_image()
        if due:
            self._complete(*ready, reason="protocol")

    def start(self) -> None:
        """Hand on series left COMPLETE before a restart, complete those already due, then watch quiet periods."""
        if self._thread is not None:
            return
        with session_scope(self._session_factory) as session:
            left = [
                (s.id, s.revision)
                for s in repository.series_in_states(session, states=[SeriesState.COMPLETE])
                if s.role not in MAPPING_ROLES  # handed on by check_now once their study has settled
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
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def check_now(self) -> None:
        """Complete every series that is due (expected count reached, or quiet for the quiet period), then hand on
        the complete mapping series of settled studies."""
        with session_scope(self._session_factory) as session:
            due = repository.series_expected_reached(session)
            quiet = repository.series_quiet_since(session, before=utcnow() - self._quiet)
        for series_id, revision in due:
            self._complete(series_id, revision, reason="protocol")
        for series_id, revision in quiet:
            self._complete(series_id, revision, reason="quiet period")
        with session_scope(self._session_factory) as session:
            settled = repository.settled_series(session, roles=MAPPING_ROLES, settled_before=utcnow() - self._pairing)
        for series_id, revision in settled:
            if (series_id, revision) not in self._handed_on:
                self._handed_on.add((series_id, revision))
                self._hand_on(series_id, revision)

    def _check_at(self, moment: float) -> None:
        with self._lock:
            self._next_check_at = min(self._next_check_at, moment)
        self._wake.set()

    def _run(self) -> None:
        failures = 0
        logged_at = -math.inf
        while not self._stop.is_set():
            with self._lock:
                if self._next_check_at <= time.monotonic():
                    self._next_check_at = math.inf
            try:
                self.check_now()
            except Exception as error:  # the database or the disk may be briefly unavailable; keep watching
                failures += 1
                now = time.monotonic()
                if failures == 1:
                    LOGGER.exception("series assembly check failed")
                    logged_at = now
                elif now - logged_at >= FAILURE_LOG_INTERVAL_S:
                    LOGGER.error("series assembly check still failing (%d checks in a row): %s", failures, error)
                    logged_at = now
            else:
                if failures:
                    LOGGER.info("series assembly check recovered after %d failed checks", failures)
                failures = 0
            poll_at = time.monotonic() + min(POLL_INTERVAL_S * 2.0 ** failures, FAILING_POLL_MAX_S)
            while not self._stop.is_set():
                with self._lock:
                    wait_s = min(poll_at, self._next_check_at) - time.monotonic()
                if wait_s <= 0:
                    break
                self._wake.wait(wait_s)
                self._wake.clear()

    def _complete(self, series_id: int, revision: int, *, reason: str) -> None:
        with session_scope(self._session_factory) as session:
            won = repository.mark_series_complete(session, series_id=series_id, revision=revision)
            series = repository.get_series(session, series_id=series_id) if won else None
            waits = series is not None and series.role in MAPPING_ROLES
        if won:
            LOGGER.info("series %d revision %d complete (%s)%s", series_id, revision, reason,
                        "; handed on when its study has settled" if waits else "")
            if not waits:
                self._hand_on(series_id, revision)
            else:
                self._check_at(time.monotonic() + self._pairing.total_seconds() + SETTLE_MARGIN_S)

    def _hand_on(self, series_id: int, revision: int) -> None:
        try:
            self._on_complete(series_id, revision)
        except Exception:
            LOGGER.exception(
                "handing on series %d revision %d failed; it is retried at the next start",
                series_id,
                revision,
            )
