"""The web page under a login flood: /healthz latency while wrong passwords arrive, and what the throttle lets in.

Serves the real app (uvicorn on 127.0.0.1, SQLite, one user) and sends ``--logins`` wrong logins (default 50) from
``--clients`` concurrent clients (default 16) while timing /healthz back to back:

1. reference: no throttle and scrypt run on the event loop (how the login worked before);
2. no throttle, scrypt in the app's hashing threads (every guess is hashed: the worst case, as from many
   addresses at once);
3. the default throttle (per user and per address, exponential backoff): how many guesses reach scrypt.

Printed: /healthz median, 90th percentile and slowest in ms for each, the ratios reference / threaded of the
medians and of the slowest, and the login statuses of each run.

Usage: ``python benchmarks/bench_login_flood.py [--logins 50] [--clients 16]``
"""

from __future__ import annotations

import argparse
import logging
import math
import re
import socket
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import uvicorn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from config.settings import Settings, StorageSettings  # noqa: E402
from db.migrate import upgrade  # noqa: E402
from db.session import make_engine, make_session_factory  # noqa: E402
from reports.web import create_app  # noqa: E402
from reports.web.auth import WebAuth  # noqa: E402
from reports.web.csrf import CSRF_FIELD  # noqa: E402
from reports.web.throttle import LoginThrottle  # noqa: E402
from reports.web.users import add_user, find_user  # noqa: E402

USER = "tech1"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _percentiles_ms(samples: list[float]) -> tuple[float, float, float]:
    ordered = sorted(samples)
    p90 = ordered[max(0, math.ceil(0.9 * len(ordered)) - 1)]  # nearest rank
    return statistics.median(ordered) * 1e3, p90 * 1e3, ordered[-1] * 1e3


def _flood(app: Any, logins: int, clients: int) -> tuple[list[float], list[float], Counter[int], float]:
    """(quiet /healthz times, /healthz times during the flood, login statuses, flood seconds)."""
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120) as client:
            found = re.search(rf'name="{CSRF_FIELD}" value="([0-9a-f]+)"', client.get("/login").text)
            assert found is not None, "no form token on /login"

            def healthz() -> float:
                started = time.perf_counter()
                client.get("/healthz")
                return time.perf_counter() - started

            def guess(i: int) -> int:
                form = {"username": USER, "password": f"guess {i}", CSRF_FIELD: found.group(1)}
                return client.post("/login", data=form).status_code

            quiet = [healthz() for _ in range(20)]
            with ThreadPoolExecutor(max_workers=clients) as pool:
                started = time.monotonic()
                futures = [pool.submit(guess, i) for i in range(logins)]
                during = []
                while not all(f.done() for f in futures):
                    during.append(healthz())
                flood_s = time.monotonic() - started
                statuses = Counter(f.result() for f in futures)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
    return quiet, during or [0.0], statuses, flood_s


def _app(folder: Path, *, throttled: bool, hashing_on_loop: bool) -> Any:
    engine = make_engine(f"sqlite:///{folder / 'node.db'}")
    upgrade(engine)
    factory = make_session_factory(engine)
    with factory() as session:
        if find_user(session, USER) is None:
            add_user(session, USER, "the right one")
            session.commit()
    app = create_app(Settings(storage=StorageSettings(path=folder / "storage", min_free_mb=1)), factory)
    auth: WebAuth = app.state.web_auth
    if not throttled:
        auth.throttle = LoginThrottle(free_failures_per_user=10**9, free_failures_per_address=10**9)
    if hashing_on_loop:
        async def on_the_loop(function: Callable[..., Any], *args: object) -> Any:
            return function(*args)

        auth.run_hashing = on_the_loop  # type: ignore[method-assign]
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--logins", type=int, default=50)
    parser.add_argument("--clients", type=int, default=16)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="myomap-login-flood-"))
    runs = {
        "reference: scrypt on the event loop, no throttle": _app(folder, throttled=False, hashing_on_loop=True),
        "scrypt in hashing threads, no throttle": _app(folder, throttled=False, hashing_on_loop=False),
        "default throttle": _app(folder, throttled=True, hashing_on_loop=False),
    }
    logging.basicConfig(level=logging.ERROR)  # the failed-login lines are the node's, not the figures
    figures: list[tuple[float, float, float]] = []
    for name, app in runs.items():
        quiet, during, statuses, flood_s = _flood(app, args.logins, args.clients)
        median_ms, p90_ms, max_ms = _percentiles_ms(during)
        figures.append((median_ms, p90_ms, max_ms))
        print(f"{name}: {args.logins} wrong logins in {flood_s:.2f} s, statuses {dict(sorted(statuses.items()))}; "
              f"/healthz quiet median {statistics.median(quiet) * 1e3:.1f} ms, during the flood median "
              f"{median_ms:.1f} ms, p90 {p90_ms:.1f} ms, max {max_ms:.1f} ms ({len(during)} requests)")
    (reference_median, _, reference_max), (threaded_median, _, threaded_max) = figures[0], figures[1]
    print(f"/healthz during the flood, reference / hashing threads: median {reference_median / threaded_median:.0f}x, "
          f"slowest {reference_max / threaded_max:.1f}x (the reference's event loop answers few requests at all)")


if __name__ == "__main__":
    main()
