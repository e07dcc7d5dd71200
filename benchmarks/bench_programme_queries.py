"""The training programme's queries on a busy training unit: teams of trainees with many scored attempts.

A SQLite node database is filled with reader-score results as the reader job records them (tests/unit/programme
builders): ``--teams`` teams of ``--trainees`` trainees, each with ``--attempts`` attempts of two scored slices
spread over ``--cases`` cases of one training set with accreditation criteria. Printed: the number of results,
then the seconds of one trainee's progress (``trainee_progress``, accreditation included), one team's summary
(``team_summary``) and one accreditation (``evaluate``), each the best of three runs.

Usage: ``python benchmarks/bench_programme_queries.py [--teams 3] [--trainees 10] [--attempts 40] [--cases 20]``
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from reports.programme import people, training_sets  # noqa: E402
from reports.programme.accreditation import evaluate  # noqa: E402
from reports.programme.queries import team_summary, trainee_progress  # noqa: E402
from tests.unit.programme.builders import START, ProgrammeDatabase, SliceFigures  # noqa: E402

MODES = ("good", "good", "good", "blood_pool", "epicardial_fat", "papillary")


def _best_of_three(run: Callable[[], object]) -> float:
    times = []
    for _ in range(3):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teams", type=int, default=3)
    parser.add_argument("--trainees", type=int, default=10)
    parser.add_argument("--attempts", type=int, default=40)
    parser.add_argument("--cases", type=int, default=20)
    args = parser.parse_args()
    rng = random.Random(7)
    cases = [f"1.2.3.{n}" for n in range(1, args.cases + 1)]
    with tempfile.TemporaryDirectory() as folder:
        db = ProgrammeDatabase(Path(folder))
        with db.factory.begin() as session:
            training_sets.create_training_set(session, "unit", cases, criteria=training_sets.Criteria(
                min_mean_dice=0.85, max_abs_t1_difference_ms=30, last_cases=5, min_cases=5))
            names = [(f"team{t}", f"trainee {t}-{n}") for t in range(args.teams) for n in range(args.trainees)]
            for team, name in names:
                people.add_reader(session, name, team=team)
        for team, name in names:
            for attempt in range(args.attempts):
                dice = min(0.95, 0.7 + 0.25 * attempt / args.attempts + rng.gauss(0, 0.02))
                peers = {other: round(rng.uniform(0.7, 0.9), 3) for t, other in names if t == team and other != name}
                figures = SliceFigures(dice, rng.gauss(0, 25), rng.choice(MODES), map_mean_ms=rng.gauss(1000, 30),
                                       segments_ms={s: rng.gauss(0, 20) for s in range(1, 7)}, peer_dice=peers)
                db.score(name, rng.choice(cases), START + timedelta(hours=attempt), [figures, figures])
        print(f"{len(names) * args.attempts} reader-score results, {len(names)} trainees, {args.cases} cases")
        name = names[0][1]
        with db.factory.begin() as session:
            print(f"trainee_progress: {_best_of_three(lambda: trainee_progress(session, name)):.3f} s")
            print(f"team_summary:     {_best_of_three(lambda: team_summary(session, 'team0')):.3f} s")
            print(f"evaluate:         {_best_of_three(lambda: evaluate(session, name, 'unit')):.3f} s")
        db.engine.dispose()


if __name__ == "__main__":
    main()
