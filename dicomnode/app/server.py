"""The whole node: storage SCP, series assembly, queue workers and the web page (``myomap serve`` runs the
workers in a child process of their own, :mod:`dicomnode.app.analysis_process`; an embedded :class:`Node` in
threads unless told otherwise).

Start-up brings the database to the newest schema, then puts back on the queue whatever a stopped or killed node
left unfinished (jobs QUEUED or RUNNING, transfers still pending, series complete but not yet handed on) before
the SCP starts. Jobs whose worker died (in this or a `myomap worker` process; running ones on PostgreSQL only)
are queued again at every health check and when a worker process starts, and so are transfers overdue by a
health-check interval. SIGTERM and SIGINT stop it gracefully: no new associations, running jobs finish, the web
server closes.
"""

from __future__ import annotations

import logging
import signal
import socket
import threading
from dataclasses import dataclass
from functools import partial
from types import FrameType

import uvicorn
from huey.consumer import Consumer
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from config import Settings
from db import migrate
from db.session import make_engine, make_session_factory
from dicomnode.analysis.slices import start_node_slice_helpers, stop_slice_helpers, warm_up_models
from dicomnode.app.analysis_process import AnalysisProcess, shared_hold
from dicomnode.app.heap import freeze_start_up_objects
from dicomnode.app.scp_processes import ScpProcesses, bound_settings, scp_process_count, shared_open_connections
from dicomnode.app.uploads import NodeUploads
from dicomnode.jobs import map_job
from dicomnode.jobs.creation import enqueue_series, requeue_orphaned, requeue_overdue_transfers, requeue_unfinished
from dicomnode.jobs.outputs import ALGORITHM_VERSION
from dicomnode.jobs.queue import CONSOLE_HOLD_MARGIN_S, NodeQueue, make_consumer, make_queue
from dicomnode.jobs.tasks import NodeTasks, register_tasks
from dicomnode.net.handoff import HandOff
from dicomnode.net.scp import StorageSCP
from dicomnode.store.assembly import Assembler
from dicomnode.store.reconcile import reconcile_storage
from inference.runtime import limit_blas_threads
from reports.web import create_app
from reports.web.users import ensure_initial_admin

LOGGER = logging.getLogger(__name__)

#: How often the main loop checks that the queue's worker threads are alive (and restarts dead ones) and
#: re-queues work lost with a killed worker; also how overdue a transfer must be to count as lost.
HEALTH_CHECK_INTERVAL_S = 10.0
#: Longest wait for the web server to start listening or to stop.
WEB_START_TIMEOUT_S = 15.0


@dataclass(frozen=True)
class Database:
    """The node's engine and sessions, schema up to date."""

    engine: Engine
    session_factory: sessionmaker[Session]


def open_database(settings: Settings) -> Database:
    """Create the storage folder, connect to the database and apply pending migrations."""
    settings.storage_root.mkdir(parents=True, exist_ok=True)
    engine = make_engine(settings.database_url)
    migrate.upgrade(engine)
    return Database(engine=engine, session_factory=make_session_factory(engine))


class Node:
    """The running services of one node; :meth:`start` them, later :meth:`stop` them (from any thread).

    With ``separate_analysis`` the queue's workers run in a supervised child process
    (:class:`~dicomnode.app.analysis_process.AnalysisProcess`), as ``myomap serve`` runs them; otherwise in
    threads of this process. With ``scp_processes`` above 1, that many processes receive on the DICOM ports
    (:mod:`dicomnode.app.scp_processes`): this one and supervised children.
    """

    def __init__(self, settings: Settings, *, separate_analysis: bool = False, scp_processes: int = 1) -> None:
        self.settings = settings
        self._separate_analysis = separate_analysis
        self._scp_processes = scp_processes
        self._analysis: AnalysisProcess | None = None
        self._scp_children: ScpProcesses | None = None
        self._database: Database | None = None
        self._queue: NodeQueue | None = None
        self._tasks: NodeTasks | None = None
        self._consumer: Consumer | None = None
        self._scp: StorageSCP | None = None
        self._assembler: Assembler | None = None
        self._web: uvicorn.Server | None = None
        self._web_thread: threading.Thread | None = None
        self._stopped = threading.Event()

    @property
    def dicom_port(self) -> int:
        """The port the storage SCP listens on (the configured one, or the one chosen for port 0)."""
        if self._scp is None or self._scp.port is None:
            raise RuntimeError("the node is not started; call start() first")
        return self._scp.port

    @property
    def web_port(self) -> int:
        """The port the web page listens on."""
        if self._web is None or not self._web.servers:
            raise RuntimeError("the web server is not listening; call start() first")
        return int(self._web.servers[0].sockets[0].getsockname()[1])

    @property
    def session_factory(self) -> sessionmaker[Session]:
        if self._database is None:
            raise RuntimeError("the node is not started; call start() first")
        return self._database.session_factory

    def start(self) -> None:
        """Open the database, recover unfinished work, then start the workers, the SCP and the web page."""
        settings = self.settings
        # Patient data: a storage folder the node creates is for the node's own user only.
        settings.storage_root.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._database = open_database(settings)
        session_factory = self._database.session_factory
        ensure_initial_admin(settings, session_factory)  # first start with the web login on: user admin
        # Files are the durable record: rebuild rows an OS crash rolled back and drop half-written temp files.
        report = reconcile_storage(settings, session_factory)
        LOGGER.info(
            "storage reconciled in %.2f s: %d files, %d temporary removed, %d rows rebuilt, %d updated, "
            "%d unreadable, %d rows without file",
            report.seconds, report.files_on_disk, report.temporary_removed, report.instances_recorded,
            report.instances_updated, len(report.unreadable), len(report.rows_without_file),
        )
        hold = shared_hold() if self._separate_analysis or self._scp_processes > 1 else None
        self._queue = make_queue(settings, hold)
        tasks = register_tasks(self._queue, settings=settings, session_factory=session_factory)
        self._tasks = tasks
        requeue_unfinished(session_factory=session_factory, sink=tasks)
        if self._separate_analysis and hold is not None:
            # A dead analysis process's RUNNING jobs: no worker of the node runs until its successor starts.
            self._analysis = AnalysisProcess(
                settings, hold, before_restart=partial(requeue_unfinished, session_factory=session_factory, sink=tasks)
            )
            self._analysis.start()
        else:
            LOGGER.info("map builders ready in %.2f s", map_job.warm_up())
            limit_blas_threads()  # queue workers and slices run in parallel threads instead
            _log_models_ready(warm_up_models(settings))
            self._consumer = make_consumer(self._queue, settings.queue.workers, handle_signals=False)
            self._consumer.start()
        # The assembler's start hands on series left COMPLETE by a previous run (their jobs are keyed, so a
        # series whose job already exists gets no second one).
        self._assembler = Assembler(
            session_factory, settings, partial(enqueue_series, session_factory=session_factory, sink=tasks),
            # A scanner sends a mapping series: reader scoring and archive transfers wait until its analysis runs.
            on_mapping_image=partial(self._queue.hold_background,
                                     settings.series.pairing_seconds + CONSOLE_HOLD_MARGIN_S),
        )
        self._assembler.start()
        open_connections = shared_open_connections(self._scp_processes) if self._scp_processes > 1 else None
        # Until the children run, every connection is served here.
        handoff = HandOff(open_connections, self._child_channel) if open_connections is not None else None
        self._scp = StorageSCP(settings, session_factory, self._assembler, handoff=handoff)
        self._scp.start()
        if open_connections is not None:
            self._scp_children = ScpProcesses(
                bound_settings(settings, self.dicom_port, self._scp.tls_port), hold, open_connections
            )
            self._scp_children.start()
        self._start_web(session_factory, tasks)
        freeze_start_up_objects()
        LOGGER.info(
            "myomap node %s ready: DICOM %s:%d (%d processes), web http://%s:%d, %d workers",
            settings.dicom.ae_title,
            settings.dicom.bind,
            self.dicom_port,
            self._scp_processes,
            settings.web.bind,
            self.web_port,
            settings.queue.workers,
        )

    def _child_channel(self, index: int) -> socket.socket | None:
        return None if self._scp_children is None else self._scp_children.channel(index)

    def _start_web(self, session_factory: sessionmaker[Session], tasks: NodeTasks) -> None:
        # The page's upload stores through the node's own storage and assembler (the web layer cannot import them).
        uploads = NodeUploads(self.settings, session_factory, self._assembler, ALGORITHM_VERSION)
        app = create_app(self.settings, session_factory, enqueue_delivery=tasks.enqueue_delivery,
                         accept_upload=uploads)
        config = uvicorn.Config(
            app,
            host=self.settings.web.bind,
            port=self.settings.web.port,
            log_config=None,  # the CLI configures logging
            access_log=False,
            lifespan="on",
        )
        self._web = uvicorn.Server(config)
        # Off the main thread uvicorn installs no signal handlers; the node handles them.
        self._web_thread = threading.Thread(target=self._web.run, name="web", daemon=True)
        self._web_thread.start()
        waited = threading.Event()
        for _ in range(int(WEB_START_TIMEOUT_S / 0.05)):
            if self._web.started or not self._web_thread.is_alive():
                break
            waited.wait(0.05)
        if not self._web.started:
            raise RuntimeError(
                f"web server did not start on {self.settings.web.bind}:{self.settings.web.port} "
                f"within {WEB_START_TIMEOUT_S} s (port in use?)"
            )

    def stop(self) -> None:
        """Stop accepting associations, let running jobs finish, stop the web page; safe to call twice."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        LOGGER.info("myomap node stopping")
        if self._scp_children is not None:
            self._scp_children.stop()
        if self._scp is not None:
            self._scp.stop()
        if self._assembler is not None:
            self._assembler.stop()
        if self._consumer is not None:
            self._consumer.stop(graceful=True)
        if self._analysis is not None:
            self._analysis.stop()
        if self._web is not None and self._web_thread is not None:
            self._web.should_exit = True
            self._web_thread.join(WEB_START_TIMEOUT_S)
        if self._queue is not None:
            self._queue.huey.storage.close()
        if self._database is not None:
            self._database.engine.dispose()
        LOGGER.info("myomap node stopped")

    def check_health(self) -> None:
        """Restart queue worker threads that died; re-queue the work of workers (of any process) that died."""
        if self._consumer is not None and not self._stopped.is_set():
            self._consumer.check_worker_health()
        if self._analysis is not None and not self._stopped.is_set():
            self._analysis.check()
        if self._scp_children is not None and not self._stopped.is_set():
            self._scp_children.check()
        if self._database is not None and self._tasks is not None and not self._stopped.is_set():
            session_factory = self._database.session_factory
            requeue_orphaned(
                session_factory=session_factory, sink=self._tasks, queued_job_ids=self._tasks.queued_job_ids()
            )
            requeue_overdue_transfers(
                session_factory=session_factory, sink=self._tasks, overdue_s=HEALTH_CHECK_INTERVAL_S
            )


def serve(settings: Settings) -> None:
    """Run the node until SIGTERM or SIGINT (call from the main thread)."""
    stop_requested = threading.Event()

    def request_stop(signum: int, _frame: FrameType | None) -> None:
        LOGGER.info("received %s", signal.Signals(signum).name)
        stop_requested.set()

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    node = Node(settings, separate_analysis=settings.queue.separate_process,
                scp_processes=scp_process_count(settings))
    try:
        node.start()
        while not stop_requested.wait(HEALTH_CHECK_INTERVAL_S):
            node.check_health()
    finally:
        node.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _log_models_ready(seconds: float | None) -> None:
    if seconds is not None:
        LOGGER.info("models loaded and run once in %.2f s", seconds)


def run_worker(settings: Settings, *, hold: object = None) -> None:
    """Run only the queue's workers until SIGTERM/SIGINT: work spread over machines with a Redis queue, or the
    analysis process of ``myomap serve`` (``hold``: the background hold the node's process shares with it)."""
    limit_blas_threads()
    _log_models_ready(warm_up_models(settings))
    start_node_slice_helpers(settings)  # forks of this process: before it opens anything or starts a thread
    database = open_database(settings)
    queue = make_queue(settings, hold)
    tasks = register_tasks(queue, settings=settings, session_factory=database.session_factory)
    LOGGER.info("map builders ready in %.2f s", map_job.warm_up())
    # A worker killed mid-job (this one before a restart, or another) took the job's task off the queue with it.
    requeue_orphaned(session_factory=database.session_factory, sink=tasks, queued_job_ids=tasks.queued_job_ids())
    consumer = make_consumer(queue, settings.queue.workers, handle_signals=True)
    LOGGER.info("myomap worker started with %d workers on %s", settings.queue.workers, queue.huey.name)
    try:
        consumer.run()
    finally:
        stop_slice_helpers()
        database.engine.dispose()
