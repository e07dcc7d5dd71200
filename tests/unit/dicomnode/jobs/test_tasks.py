"""Queue priorities of the node's tasks: map jobs and a map analysis's images for a console first."""

from __future__ import annotations

from config.settings import Output, Peer, Settings
from dicomnode.jobs.creation import JobKind, job_key
from dicomnode.jobs.queue import Priority, is_console_priority
from dicomnode.jobs.tasks import job_priority, transfer_priority


def test_map_jobs_are_console_work_and_readers_background_with_re_scoring_last() -> None:
    assert job_priority(JobKind.T1_MAP.value, job_key("1.2.3", 1, JobKind.T1_MAP)) is Priority.CONSOLE
    assert job_priority(JobKind.T2_MAP.value, job_key("1.2.3", 1, JobKind.T2_MAP)) is Priority.CONSOLE
    first = job_key("1.2.4", 1, JobKind.READER_SCORE)
    again = job_key("1.2.4", 1, JobKind.READER_SCORE, reference_digest="0123456789abcdef")
    assert job_priority(JobKind.READER_SCORE.value, first) is Priority.READER
    assert job_priority(JobKind.READER_SCORE.value, again) is Priority.RESCORE
    assert is_console_priority(Priority.CONSOLE) and not is_console_priority(Priority.READER)
    assert Priority.CONSOLE_TRANSFER > Priority.CONSOLE > Priority.ARCHIVE_TRANSFER > Priority.READER > \
        Priority.RESCORE


def test_a_map_analysis_goes_to_a_console_first_and_to_the_archive_after_reader_work_is_queued() -> None:
    settings = Settings(
        peers=[Peer(ae_title="SCANNER", host="10.0.0.7", port=4006),
               Peer(ae_title="PACS", host="10.0.0.2", port=104, receives=[Output.MAPS, Output.SR, Output.SC])],
        routing={"return_to_sender": True, "return_outputs": [Output.MAPS, Output.SC]},
    )
    assert transfer_priority(settings, job_kind="t1_map", ae_title="SCANNER", calling_ae="SCANNER") \
        is Priority.CONSOLE_TRANSFER
    assert transfer_priority(settings, job_kind="t1_map", ae_title="PACS", calling_ae="SCANNER") \
        is Priority.ARCHIVE_TRANSFER
    # A reader's overlay is never console work, whoever receives it.
    assert transfer_priority(settings, job_kind="reader_score", ae_title="SCANNER", calling_ae="SCANNER") \
        is Priority.ARCHIVE_TRANSFER
