"""The trainee's progress report after each scored attempt, as Encapsulated PDF for the peers that ask for ``pdf``.

Once a reader-score job has recorded a trainee's result, the trainee's whole progress (every attempt so far and the
accreditation standing, :func:`reports.programme.queries.trainee_progress`) is rendered as the PDF report and
written as a new series of the training case's study (:class:`reports.encapsulated_pdf.EncapsulatedPdf`), then
routed as output kind ``pdf`` with the result's other files. Experts and supervisors get none, and nothing is
made when no peer receives ``pdf``. A report that cannot be made is logged and leaves the scoring as it is.
"""

from __future__ import annotations

import logging
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from pydicom.dataset import Dataset
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from config import Settings
from config.settings import Output
from db.models import ReaderRole, Result, Series
from db.readers import reader_role
from db.session import session_scope
from dicomnode.jobs.outputs import ALGORITHM_VERSION, OutputSeries, OutputWriter
from dicomnode.net import scu

if TYPE_CHECKING:
    from dicomnode.jobs.reader_job import ClaimedReaderJob, ReaderComparison

LOGGER = logging.getLogger(__name__)

#: The report's line on a PACS series list.
SERIES_DESCRIPTION = "myomap trainee progress report"


def pdf_wanted(settings: Settings) -> bool:
    """Whether any peer receives ``pdf`` (a configured receiver, or the sender when results go back to it)."""
    return any(Output.PDF in peer.receives for peer in settings.peers) or (
        settings.routing.return_to_sender and Output.PDF in settings.routing.return_outputs)


def send_trainee_report(claimed: ClaimedReaderJob, comparison: ReaderComparison, *, result_kind: str,
                        settings: Settings, session_factory: sessionmaker[Session]) -> list[int]:
    """Write the trainee's report as Encapsulated PDF and plan its transfers; the transfers' ids (none when no
    peer asks for ``pdf``, the reader is not a trainee, no slice was scored, or the report failed)."""
    scored = [item for item in comparison.slices if item.score is not None]
    if not scored or not pdf_wanted(settings):
        return []
    try:
        with session_scope(session_factory) as session:
            if reader_role(session, comparison.reader) is not ReaderRole.TRAINEE:
                return []
            return _write_and_plan(session, claimed, comparison.reader, scored[0].map_source,
                                   result_kind=result_kind, settings=settings)
    except Exception:  # the report is a by-product: the scoring and its outputs stand without it
        LOGGER.exception("job %d: the trainee report of %s was not made", claimed.job_id, comparison.reader)
        return []


def _write_and_plan(session: Session, claimed: ClaimedReaderJob, reader: str, source: Dataset, *,
                    result_kind: str, settings: Settings) -> list[int]:
    from reports.encapsulated_pdf import EncapsulatedPdf
    from reports.pdf import trainee_pdf
    from reports.programme.queries import trainee_progress

    made_at = datetime.now().astimezone()
    pdf = trainee_pdf(trainee_progress(session, reader), node_version=ALGORITHM_VERSION, generated_at=made_at,
                      storage_root=settings.storage_root)
    writer = OutputWriter(claimed.key, settings.storage_root, claimed.study_instance_uid, claimed.series_number or 0)
    document = EncapsulatedPdf(
        pdf, source, series_instance_uid=writer.series_uid(OutputSeries.READER_PDF),
        sop_instance_uid=writer.uid("reader-pdf"), series_number=writer.series_number(OutputSeries.READER_PDF),
        instance_number=1, document_title=f"Trainee progress report: {reader}",
        series_description=SERIES_DESCRIPTION, content_datetime=made_at,
    )
    path: Path = writer.write(document)
    result = session.scalars(select(Result).where(Result.job_id == claimed.job_id, Result.kind == result_kind)
                             .order_by(Result.id.desc())).first()
    series = session.get(Series, claimed.series_id)
    if result is None or series is None:
        LOGGER.warning("job %d: no result to send the trainee report with", claimed.job_id)
        return []
    transfers = scu.plan_output_transfers(session, result=result, series=series, outputs={Output.PDF: [path]},
                                          settings=settings)
    session.flush()
    LOGGER.info("job %d: trainee report of %s written (%d bytes), %d transfers", claimed.job_id, reader, len(pdf),
                len(transfers))
    return [transfer.id for transfer in transfers]
