"""Screenshots of the training pages for docs/training.md, from a phantom training set scored by the real reader job.

Run from the repository root: ``.venv/bin/python docs/screenshots/make_training_screenshots.py [--work DIR]``.

It generates a phantom training set (three cases, three experts, three trainees on three attempts each: one
improving, one keeping the epicardial fat in, one improving from a shifted contour), stores it as the Storage SCP
does and scores every trainee's contour with the reader job (:mod:`tests.unit.reports.training_site`), serves the
web page with its login on, logs in through the login form as a supervisor and as a trainee, and has headless
Chromium take the pages each of them sees.
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
import tempfile
from pathlib import Path

import httpx

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT))

from dicomnode.app.uploads import NodeUploads  # noqa: E402
from dicomnode.jobs.outputs import ALGORITHM_VERSION  # noqa: E402
from reports.programme import people  # noqa: E402
from reports.web import create_app  # noqa: E402
from tests.integration.browser import AppServer, Chromium  # noqa: E402
from tests.unit.reports.training_site import (  # noqa: E402
    IMPROVING,
    PASSWORD,
    PERSISTENT,
    TEAM_NORTH,
    TRAINING_SET,
    build_training_site,
)

OUT = Path(__file__).resolve().parent


def log_in(server: AppServer, username: str) -> str:
    """The Cookie header of a browser that logged in through the form (its form token included)."""
    with httpx.Client(base_url=server.url(""), follow_redirects=False, timeout=10) as client:
        form = client.get("/login").text
        token = re.search(r'name="csrf_token" value="([^"]+)"', form)
        data = {"username": username, "password": PASSWORD, "next": "/training"}
        if token:
            data["csrf_token"] = token.group(1)
        response = client.post("/login", data=data)
        if response.status_code != 303:
            raise RuntimeError(f"login of {username} failed with {response.status_code}: {response.text[:300]}")
        return "; ".join(f"{name}={value}" for name, value in client.cookies.items())


def shots(work: Path) -> list[Path]:
    site_steps = build_training_site(work, n_cases=3, n_attempts=3)
    site = next(site_steps)
    with site.session_factory.begin() as session:
        # A DICOM name as a workstation writes it, mapped to the reader it stands for.
        people.add_alias(session, "ROE^RICHARD*", PERSISTENT)
    chromium = Chromium(window_size=(1280, 1800), virtual_time_budget_ms=30000)
    written = []
    uploads = NodeUploads(site.settings, site.session_factory, None, ALGORITHM_VERSION)
    with AppServer(create_app(site.settings, site.session_factory, accept_upload=uploads)) as server:
        pages = {
            "sup_north": [("training_team.png", f"/training/team/{TEAM_NORTH}"),
                          ("training_set.png", "/training/sets/" + TRAINING_SET.replace(" ", "%20")),
                          ("training_readers.png", "/training/readers")],
            "admin": [("training_users.png", "/training/readers")],
            "trainee": [("training_trainee.png", f"/training/trainee/{IMPROVING}"),
                        ("training_upload.png", "/training/upload"),
                        ("training_forbidden.png", f"/training/team/{TEAM_NORTH}")],
        }
        for user, shots_of_user in pages.items():
            server.browser_cookie = log_in(server, user)
            for name, path in shots_of_user:
                written.append(chromium.screenshot(server.url(path), OUT / name))
    next(site_steps, None)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, help="folder for the phantom and the node's data (default: temporary)")
    options = parser.parse_args()
    work = options.work or Path(tempfile.mkdtemp(prefix="myomap-training-shots-"))
    try:
        for path in shots(work):
            print(path.relative_to(REPO_ROOT))
    finally:
        if options.work is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
