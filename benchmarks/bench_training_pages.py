"""Training pages' answer times: a trainee dashboard and a team dashboard on a scored phantom training set.

The phantom training set (``--cases`` cases with three experts and three trainees on ``--attempts`` attempts each)
is stored and scored by the real reader job (:mod:`tests.unit.reports.training_site`; not timed); then each page
is requested ``--repeats`` times through the web app in process (an admin's HTTP Basic login, which the node
checks with scrypt once and then remembers). Printed per page: median and slowest answer in ms and its size.

Usage: ``python benchmarks/bench_training_pages.py [--cases 3] [--attempts 3] [--repeats 20]``
"""

from __future__ import annotations

import argparse
import base64
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fastapi.testclient import TestClient  # noqa: E402

from reports.web import create_app  # noqa: E402
from tests.unit.reports.training_site import IMPROVING, PASSWORD, TEAM_NORTH, build_training_site  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=3)
    parser.add_argument("--attempts", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=20)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="myomap-bench-training-") as folder:
        steps = build_training_site(Path(folder), n_cases=options.cases, n_attempts=options.attempts)
        site = next(steps)
        client = TestClient(create_app(site.settings, site.session_factory))
        headers = {"authorization": "Basic " + base64.b64encode(f"admin:{PASSWORD}".encode()).decode()}
        print(f"{options.cases} cases x {options.attempts} attempts x 3 trainees")
        for path in (f"/training/trainee/{IMPROVING}", f"/training/team/{TEAM_NORTH}"):
            client.get(path, headers=headers)  # the login's scrypt check, once
            times_ms = []
            for _ in range(options.repeats):
                start = time.perf_counter()
                response = client.get(path, headers=headers)
                times_ms.append((time.perf_counter() - start) * 1000)
                response.raise_for_status()
            print(f"{path}: median {statistics.median(times_ms):.0f} ms, slowest {max(times_ms):.0f} ms, "
                  f"{len(response.content) / 1024:.0f} kB")
        next(steps, None)


if __name__ == "__main__":
    main()
