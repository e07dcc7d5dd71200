"""The admin page's studies list with 100,000 studies: page time of the list, deep pages and each search.

Builds a node database (SQLite, migrated like the node's own, WAL) with ``--studies`` studies (default 100,000) by
bulk insert: each study has a raw MOLLI series analysed by a T1 job whose result summary has one slice (1 in 20
with motion, 1 in 50 failed with a reason, 1 in 40 with doubtful contours), a phase series stored without
analysis, and a study date, patient ID, name and accession number. Then it times, through the real app (FastAPI's
TestClient, login off), the pages an administrator opens: the first page, a page deep in the list (keyset), and
the searches by patient name, patient ID, accession number, date range and condition (failed, motion, and pending,
which no study is: the whole list is searched).

Reference in the same run: the deep page fetched with OFFSET (how the list paged before), as the ratio
offset / keyset. Printed: the median and the slowest of ``--runs`` requests (default 7) per page, in ms.

Usage: ``python benchmarks/bench_studies_page.py [--studies 100000] [--runs 7] [--keep DIR]``
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from fastapi.testclient import TestClient  # noqa: E402
from sqlalchemy import insert, select  # noqa: E402
from sqlalchemy.orm import selectinload  # noqa: E402

from config.settings import Settings  # noqa: E402
from db.migrate import upgrade  # noqa: E402
from db.models import Job, Result, Series, Study  # noqa: E402
from db.session import make_engine, make_session_factory  # noqa: E402
from reports.web import create_app  # noqa: E402

FAMILY_NAMES = ("Smith", "Jones", "Garcia", "Müller", "Rossi", "Dubois", "Nowak", "Khan", "Silva", "Tanaka",
                "Olsen", "Novak", "Meyer", "Costa", "Berg", "Lindqvist", "Horvat", "Papadopoulos", "Kowalski")
GIVEN_NAMES = ("Anna", "Ben", "Chloe", "David", "Eva", "Felix", "Grace", "Hugo", "Ines", "Jonas", "Kira", "Liam")
BATCH = 5000


def _slice(index: int, rng: random.Random) -> dict:
    if index % 50 == 7:
        return {"index": 0, "status": "failed", "reason": "no left ventricle found", "banner": "Analysis not possible"}
    motion = index % 20 == 3
    return {
        "index": 0, "status": "analysed", "banner": "Motion artefact" if motion else "No motion artefact detected",
        "map_kind": "T1", "level": "mid",
        "myocardium": {"mean_ms": round(rng.gauss(1000, 40), 1), "median_ms": 1000.0, "sd_ms": 50.0},
        "motion": {"whole_image_probability": 0.8 if motion else 0.1, "segments_with_motion": [3] if motion else [],
                   "has_motion": motion},
        "quality": {"predicted_dice": 0.9, "doubtful": index % 40 == 11, "doubts": []},
    }


def build_database(path: Path, n_studies: int, seed: int = 0) -> None:
    """The node's schema (migrations) and ``n_studies`` studies with their series, jobs and results."""
    engine = make_engine(f"sqlite:///{path}")
    upgrade(engine)
    rng = random.Random(seed)
    start = datetime(2020, 1, 1, tzinfo=UTC)
    with engine.begin() as connection:
        for first in range(0, n_studies, BATCH):
            numbers = range(first, min(first + BATCH, n_studies))
            studies, series, jobs, results = [], [], [], []
            for n in numbers:
                study_id, raw_id, phase_id = n + 1, 2 * n + 1, 2 * n + 2
                received = start + timedelta(minutes=20 * n)
                studies.append({
                    "id": study_id, "study_instance_uid": f"2.25.1{n:09d}",
                    "patient_id": f"P{rng.randrange(10**7):07d}",
                    "patient_name": f"{rng.choice(FAMILY_NAMES)}^{rng.choice(GIVEN_NAMES)}",
                    "study_date": received.strftime("%Y%m%d"), "study_description": "CMR mapping",
                    "accession_number": f"A{n:08d}", "created_at": received,
                })
                for series_id, number, role, state in ((raw_id, 1, "raw_ir", "done"),
                                                       (phase_id, 2, "raw_ir_phase", "stored")):
                    series.append({
                        "id": series_id, "study_id": study_id, "series_instance_uid": f"2.25.2{series_id:09d}",
                        "series_number": number, "modality": "MR", "description": "MOLLI_5(3)3_SAX_MID",
                        "manufacturer": "SIEMENS", "role": role, "state": state, "expected_instances": 8,
                        "n_instances": 8, "revision": 0, "calling_ae": "SCANNER", "calling_host": "127.0.0.1",
                        "first_received_at": received, "last_received_at": received, "completed_at": received,
                    })
                jobs.append({
                    "id": study_id, "key": f"2.25.2{raw_id:09d}/0/t1_map", "kind": "t1_map", "series_id": raw_id,
                    "series_revision": 0, "state": "done", "attempts": 1, "error": "", "created_at": received,
                    "started_at": received, "finished_at": received,
                })
                summary = {"kind": "t1", "method": "fit", "slices": 1, "valid_pixels": 4000, "median_ms": 1000.0,
                           "unit_series": [f"2.25.2{raw_id:09d}"],
                           "analysis": {"banner": "", "slices": [_slice(n, rng)]}}
                results.append({
                    "id": study_id, "job_id": study_id, "kind": "t1_map", "output_series_uid": "",
                    "paths": [], "summary": summary, "created_at": received,
                })
            connection.execute(insert(Study), studies)
            connection.execute(insert(Series), series)
            connection.execute(insert(Job), jobs)
            connection.execute(insert(Result), results)
        connection.exec_driver_sql("ANALYZE")
    engine.dispose()


def _time(call: Callable[[], object], runs: int) -> tuple[float, float]:
    times_ms = []
    for _ in range(runs):
        begin = time.perf_counter()
        call()
        times_ms.append((time.perf_counter() - begin) * 1000)
    return statistics.median(times_ms), max(times_ms)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--keep", type=Path, help="build the database in this folder and keep it")
    args = parser.parse_args()
    folder = args.keep or Path(tempfile.mkdtemp(prefix="myomap-bench-studies-"))
    folder.mkdir(parents=True, exist_ok=True)
    database = folder / "myomap.db"
    database.unlink(missing_ok=True)
    begin = time.perf_counter()
    build_database(database, args.studies)
    print(f"built {args.studies:,} studies (2 series, 1 job, 1 result each) in {time.perf_counter() - begin:.1f} s:"
          f" {database} ({database.stat().st_size / 2**20:.0f} MiB)")

    settings = Settings(storage={"path": folder, "min_free_mb": 1}, web={"login": False},
                        database={"url": f"sqlite:///{database}"})
    factory = make_session_factory(make_engine(f"sqlite:///{database}"))
    client = TestClient(create_app(settings, factory))
    with factory() as session:
        sample = session.scalars(select(Study).where(Study.id == args.studies // 2)).one()
        patient_id, accession, family = sample.patient_id, sample.accession_number, sample.patient_name.split("^")[0]
        date_from = sample.study_date
    deep_id = args.studies // 2
    date_to = (datetime.strptime(date_from, "%Y%m%d") + timedelta(days=6)).strftime("%Y-%m-%d")
    date_from = f"{date_from[:4]}-{date_from[4:6]}-{date_from[6:]}"
    pages = {
        "first page (50 studies)": "/",
        f"deep page (keyset, before study {deep_id:,})": f"/?before={deep_id}",
        "patient name (one family name)": f"/?name={family}",
        "patient ID (exact)": f"/?patient_id={patient_id}",
        "accession number (exact)": f"/?accession={accession}",
        "study date (one week)": f"/?date_from={date_from}&date_to={date_to}",
        "state: failed": "/?state=failed",
        "state: motion": "/?state=motion",
        "state: pending (no study is)": "/?state=pending",
        "state: doubtful, deep (keyset)": f"/?state=doubtful&before={deep_id}",
    }
    print(f"{'page':52s} {'median ms':>10s} {'slowest ms':>11s}")
    for label, url in pages.items():
        response = client.get(url)
        assert response.status_code == 200, (url, response.status_code)
        assert "verdict-" in response.text
        median, slowest = _time(lambda url=url: client.get(url), args.runs)  # type: ignore[misc]
        print(f"{label:52s} {median:10.1f} {slowest:11.1f}")

    # Reference: the same deep page with OFFSET, as the list paged before (same eager loading, no rendering).
    offset = args.studies - deep_id

    def by_offset() -> None:
        with factory() as session:
            list(session.scalars(select(Study).options(selectinload(Study.series).selectinload(Series.jobs)
                                                       .selectinload(Job.results))
                                 .order_by(Study.created_at.desc(), Study.id.desc()).limit(50).offset(offset)))

    def by_keyset() -> None:
        with factory() as session:
            list(session.scalars(select(Study).options(selectinload(Study.series).selectinload(Series.jobs)
                                                       .selectinload(Job.results))
                                 .where(Study.id < deep_id).order_by(Study.id.desc()).limit(50)))

    offset_ms, _ = _time(by_offset, args.runs)
    keyset_ms, _ = _time(by_keyset, args.runs)
    print(f"deep page query alone: OFFSET {offset_ms:.1f} ms, keyset {keyset_ms:.1f} ms, "
          f"ratio offset/keyset {offset_ms / keyset_ms:.1f}")
    print(json.dumps({"studies": args.studies, "offset_ms": round(offset_ms, 1), "keyset_ms": round(keyset_ms, 1)}))
    if args.keep is None:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
