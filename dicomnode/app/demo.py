"""``make demo``: a scanner and its console around a running node, with a synthetic phantom study.

DCMTK's storescp stands in for the scanner console (AE title ``DEMO``; ``make run`` gives the node the
``[[peers]]`` entry that says it listens on 127.0.0.1; storescp itself has no option to listen on loopback only and
runs just for the demo), storescu for the scanner sending the phantom's images as ``DEMO``. The node analyses what it
received and sends the maps and the console's Secondary Captures back to the sender; this waits until the node has
analysed everything and delivered the results (the readers' scoring goes on), stops the console and says what it
received: the verdict of every Secondary Capture next to the phantom's truth, so a motion banner can be checked
against the motion the phantom put in.

Run as ``python -m dicomnode.app.demo`` with the node's settings in the environment (``make demo`` passes
``MYOMAP_STORAGE__PATH``): the wait reads the node's database.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydicom
from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session, sessionmaker

from config import load_settings
from db.models import Job, JobState, Series, SeriesState, Study, Transfer, TransferState
from db.session import make_engine, make_session_factory
from dicomnode.jobs.creation import JobKind
from dicomnode.sop_classes import SECONDARY_CAPTURE

#: The node is done once nothing is arriving, analysed or pending for this long: longer than the default pairing
#: wait (``[series] pairing_seconds``, 2 s), during which a study's complete series wait for no job yet.
IDLE_S = 3.0
#: Idle this long without all the console's images: they will not come (the caller says what did).
IDLE_GIVE_UP_S = 20.0
POLL_S = 0.5
CONSOLE_START_S = 10.0


class DemoError(RuntimeError):
    """The demo cannot go on; the message says why and what to do."""


@dataclass(frozen=True)
class ConsoleImage:
    """A Secondary Capture the console received: its series, its verdict (banner) and what it shows."""

    path: Path
    series_instance_uid: str
    series_description: str
    banner: str
    shows: str


def _dcmtk_env() -> dict[str, str]:
    # Without TCP_NODELAY, Nagle's algorithm delays every small PDU of DCMTK's tools by up to 40 ms.
    return {**os.environ, "TCP_NODELAY": "1"}


def echo(host: str, port: int, *, called_ae: str, calling_ae: str) -> bool:
    """True when echoscu gets a C-ECHO response from ``host:port``."""
    try:
        done = subprocess.run(["echoscu", "-to", "2", "-aet", calling_ae, "-aec", called_ae, host, str(port)],
                              env=_dcmtk_env(), capture_output=True, timeout=10)
    except subprocess.TimeoutExpired:
        return False
    return done.returncode == 0


@contextmanager
def console(folder: Path, *, ae_title: str, port: int) -> Iterator[subprocess.Popen[bytes]]:
    """DCMTK storescp as the scanner console, receiving into ``folder`` until the block ends."""
    folder.mkdir(parents=True, exist_ok=True)
    log = (folder.parent / "console.log").open("wb")
    process = subprocess.Popen(["storescp", "-aet", ae_title, "-od", str(folder), "-fe", ".dcm", str(port)],
                               env=_dcmtk_env(), stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + CONSOLE_START_S
        while not echo("127.0.0.1", port, called_ae=ae_title, calling_ae=ae_title):
            if process.poll() is not None or time.monotonic() > deadline:
                raise DemoError(f"the demo console (storescp) did not start on port {port} (in use? choose another "
                                f"with DEMO_PORT=..., for `make run` too); its log: {log.name}")
            time.sleep(0.1)
        yield process
    finally:
        if process.poll() is None:
            process.terminate()
            process.wait(10)
        log.close()


def send(study_dirs: Sequence[Path], *, host: str, port: int, called_ae: str, calling_ae: str) -> None:
    """Send every ``*.dcm`` file under ``study_dirs`` as the scanner does, in one association.

    ``-R`` proposes only the SOP classes of the files sent: storescu's default list of proposals lacks the
    phantom's reader contours (Segmentation, RT Structure Set) and stops at the first such file.
    """
    command = ["storescu", "-aet", calling_ae, "-aec", called_ae, "-R", "+sd", "+r", "+sp", "*.dcm",
               host, str(port), *map(str, study_dirs)]
    print(" ".join(f"'{part}'" if "*" in part else part for part in command), flush=True)
    done = subprocess.run(command, env=_dcmtk_env(), capture_output=True, text=True)
    if done.returncode != 0:
        raise DemoError(f"storescu failed (exit status {done.returncode}):\n{done.stdout}{done.stderr}")


@dataclass(frozen=True)
class Progress:
    """What the node still has to do for the console, and the transfers it gave up on."""

    receiving: int  # series still arriving
    analyses: int  # map and study jobs queued or running (readers' scoring goes on after the console has its images)
    pending: int  # transfers not yet delivered
    given_up: int

    @property
    def busy(self) -> bool:
        return bool(self.receiving or self.analyses or self.pending)


def node_progress(session_factory: sessionmaker[Session]) -> Progress:
    """Count, in the node's database, what stands between the images sent and the console's results."""
    with session_factory() as session:
        def count(statement: Select[Any]) -> int:
            return int(session.scalar(statement) or 0)

        return Progress(
            receiving=count(select(func.count()).select_from(Series).where(Series.state == SeriesState.RECEIVING)),
            analyses=count(select(func.count()).select_from(Job).where(
                Job.state.in_((JobState.QUEUED, JobState.RUNNING)), Job.kind != JobKind.READER_SCORE.value)),
            pending=count(select(func.count()).select_from(Transfer).where(Transfer.state == TransferState.PENDING)),
            given_up=count(select(func.count()).select_from(Transfer).where(
                Transfer.state == TransferState.GIVEN_UP)),
        )


def wait_for_console(session_factory: sessionmaker[Session], folder: Path, *, expected_series: int,
                     timeout_s: float) -> Progress:
    """Wait until the node has analysed what it received and delivered the results: nothing arriving, analysed or
    pending for :data:`IDLE_S` in a row, and Secondary Captures of ``expected_series`` analyses (one series each) at
    the console; or nothing to do for :data:`IDLE_GIVE_UP_S` (results that will not come: the caller reports them).

    Raises
    ------
    DemoError
        If the node is still busy after ``timeout_s``.
    """
    deadline = time.monotonic() + timeout_s
    idle_since: float | None = None
    while True:
        progress = node_progress(session_factory)
        now = time.monotonic()
        if progress.busy:
            idle_since = None
        else:
            idle_since = now if idle_since is None else idle_since
            arrived = len({image.series_instance_uid for image in console_images(folder)})
            if now - idle_since >= (IDLE_S if arrived >= expected_series else IDLE_GIVE_UP_S):
                return progress
        if now > deadline:
            raise DemoError(f"the node is still busy after {timeout_s:.0f} s: {progress}")
        time.sleep(POLL_S)


def console_images(folder: Path) -> list[ConsoleImage]:
    """The Secondary Captures in the console's folder, in the order of their series and instance numbers."""
    found = []
    for path in sorted(folder.glob("*.dcm")):
        header = pydicom.dcmread(path, stop_before_pixels=True)
        if header.SOPClassUID != SECONDARY_CAPTURE:
            continue
        found.append((int(header.get("SeriesNumber") or 0), int(header.get("InstanceNumber") or 0), ConsoleImage(
            path=path, series_instance_uid=str(header.SeriesInstanceUID),
            series_description=str(header.get("SeriesDescription", "")), banner=str(header.get("ImageComments", "")),
            shows=str(header.get("DerivationDescription", "")).split(":")[0])))
    return [image for *_, image in sorted(found, key=lambda item: item[:2])]


def phantom_truth(study_dirs: Sequence[Path]) -> list[tuple[str, str, list[str]]]:
    """(raw series description, its Series Instance UID, AHA segments the phantom's breathing motion spoils)."""
    truth = []
    for study in study_dirs:
        manifest = json.loads((study / "manifest.json").read_text())
        for level in manifest["slices"]:
            for sequence in json.loads((study / level["sidecar"]).read_text())["sequences"]:
                raw = sequence["series"]["magnitude"]
                moved = sorted((s for s, m in sequence["motion"]["labels"].items() if m), key=int)
                truth.append((raw["series_description"], raw["series_instance_uid"], moved))
    return truth


def already_received(session_factory: sessionmaker[Session], study_dirs: Sequence[Path]) -> bool:
    """Whether the node holds any of these phantom studies."""
    uids = [json.loads((study / "manifest.json").read_text())["study_instance_uid"] for study in study_dirs]
    with session_factory() as session:
        return bool(session.scalar(select(func.count()).select_from(Study).where(Study.study_instance_uid.in_(uids))))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dicomnode.app.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=Path, required=True, help="folder written by `myomap phantom`")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=11112, help="the node's DICOM port")
    parser.add_argument("--node-ae", default="MYOMAP")
    parser.add_argument("--console-ae", default="DEMO", help="the AE title of the scanner and its console")
    parser.add_argument("--console-port", type=int, default=11113)
    parser.add_argument("--web", default="http://127.0.0.1:8080", help="the node's web page")
    parser.add_argument("--timeout-s", type=float, default=600.0, help="longest wait for the node's results")
    args = parser.parse_args(argv)

    for tool in ("storescu", "storescp", "echoscu"):
        if shutil.which(tool) is None:
            print(f"{tool} not found: install DCMTK (`make deps` as root, or apt-get install dcmtk)", file=sys.stderr)
            return 2
    if not echo(args.host, args.port, called_ae=args.node_ae, calling_ae=args.console_ae):
        print(f"No node answers on {args.host}:{args.port}: start it with `make run` first.", file=sys.stderr)
        return 1
    studies = sorted(path for path in args.studies.glob("study_*") if (path / "manifest.json").is_file())
    truth = phantom_truth(studies)
    folder = args.studies / "console"
    settings = load_settings()
    database = settings.storage_root / "myomap.db"
    if not settings.database.url and not database.is_file():
        print(f"No node database at {database}: DATA_DIR must be the data folder of the node `make run` started.",
              file=sys.stderr)
        return 1
    engine = make_engine(settings.database_url)
    try:
        session_factory = make_session_factory(engine)
        if already_received(session_factory, studies):
            # The same seed gives the same UIDs, and the node takes a re-sent identical instance as a no-op.
            print(f"The node already has this study (from an earlier `make demo`); its results are on the web page "
                  f"{args.web}. For a fresh run, stop the node and start it with an empty DATA_DIR.")
            return 0
        with console(folder, ae_title=args.console_ae, port=args.console_port):
            started = time.monotonic()
            before = node_progress(session_factory)
            send(studies, host=args.host, port=args.port, called_ae=args.node_ae, calling_ae=args.console_ae)
            print("Sent; waiting for the node's results at the console ...", flush=True)
            after = wait_for_console(session_factory, folder, expected_series=len(truth), timeout_s=args.timeout_s)
            seconds = time.monotonic() - started
    except DemoError as error:
        print(f"demo: {error}", file=sys.stderr)
        return 1
    finally:
        engine.dispose()

    images = console_images(folder)
    analyses = len({image.series_instance_uid for image in images})
    print(f"\nThe console ({args.console_ae}, storescp on port {args.console_port}) received "
          f"{len(list(folder.glob('*.dcm')))} objects in {seconds:.0f} s, among them these Secondary Captures "
          f"({folder}):")
    for series in dict.fromkeys(image.series_instance_uid for image in images):
        shown = [image for image in images if image.series_instance_uid == series]
        print(f"  {shown[0].series_description} ({', '.join(image.shows for image in shown)}):")
        for banner in dict.fromkeys(image.banner for image in shown):
            print(f"      {banner}")
    print("\nThe phantom's truth, each raw series with its page on the node's web page:")
    for description, uid, moved in truth:
        note = f"  <- breathing motion, AHA segments {', '.join(moved)}" if moved else ""
        print(f"  {description:<26} {args.web}/series/{uid}{note}")
    first_password = settings.storage_root / "initial_admin_password"
    if first_password.exists():
        print(f"\nLog in as admin with the password in {first_password} (written at the node's first start; change "
              "it with 'myomap user passwd admin', add your own user with 'myomap user add NAME').")
    else:
        print("\nLog in with a user of 'myomap user list' ('myomap user add NAME' adds one).")
    print("The node goes on scoring the readers' contours; the web page shows each reader's scores when done.")
    given_up = after.given_up - before.given_up
    if given_up or analyses < len(truth):
        print(f"demo: the console has the images of {analyses} of {len(truth)} analyses and {given_up} transfers "
              f"were given up; the node's log says why (is {args.console_ae} in its [[peers]] with port "
              f"{args.console_port}?)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
