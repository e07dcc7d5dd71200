"""The training pages on a database filled by the real reader scoring of a phantom training set: what each role
sees (and the 403s), the trainee and team dashboards' figures and plots, the supervisor pages' changes."""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from db.models import ReaderAlias, Result, TrainingCase, TrainingSet, WebUser
from reports.programme.queries import team_summary, trainee_progress
from reports.programme.training_sets import Criteria
from reports.web import create_app
from tests.unit.reports.training_site import (
    IMPROVING,
    PASSWORD,
    PERSISTENT,
    SHIFTED,
    TEAM_NORTH,
    TEAM_SOUTH,
    TRAINING_SET,
    TrainingSite,
    build_training_site,
)

SET_PATH = "/training/sets/" + TRAINING_SET.replace(" ", "%20")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TrainingSite]:
    yield from build_training_site(tmp_path_factory.mktemp("training"))


@pytest.fixture(scope="module")
def app(site: TrainingSite):  # noqa: ANN201
    return create_app(site.settings, site.session_factory)


def _basic(user: str) -> dict[str, str]:
    return {"authorization": "Basic " + base64.b64encode(f"{user}:{PASSWORD}".encode()).decode()}


class Browser:
    """A TestClient as one user: HTTP Basic on every request, the form token taken from the last page."""

    def __init__(self, app: object, user: str) -> None:
        self.client = TestClient(app)
        self.user = user
        self.token = ""

    def get(self, path: str, **options: object):  # noqa: ANN201
        response = self.client.get(path, headers=_basic(self.user), follow_redirects=False, **options)
        found = re.search(r'name="csrf_token" value="([^"]+)"', response.text)
        if found:
            self.token = found.group(1)
        return response

    def post(self, path: str, data: dict[str, str], *, form_page: str, **options: object):  # noqa: ANN201
        self.get(form_page)
        return self.client.post(path, data={**data, "csrf_token": self.token}, headers=_basic(self.user),
                                follow_redirects=False, **options)


TRAINEE_PAGE = f"/training/trainee/{IMPROVING}"

# (user, path, status): the access rules of every training route for each role.
ACCESS = [
    ("admin", "/training", 200), ("admin", TRAINEE_PAGE, 200), ("admin", f"/training/trainee/{SHIFTED}", 200),
    ("admin", f"/training/team/{TEAM_NORTH}", 200), ("admin", f"/training/team/{TEAM_SOUTH}", 200),
    ("admin", "/training/readers", 200), ("admin", "/training/sets", 200), ("admin", SET_PATH, 200),
    ("admin", "/training/upload", 200), ("admin", "/", 200), ("admin", "/api/studies", 200),
    ("sup_north", "/training", 200), ("sup_north", TRAINEE_PAGE, 200),
    ("sup_north", f"/training/trainee/{PERSISTENT}", 200),
    ("sup_north", f"/training/trainee/{SHIFTED}", 403), ("sup_north", f"/training/team/{TEAM_NORTH}", 200),
    ("sup_north", f"/training/team/{TEAM_SOUTH}", 403), ("sup_north", "/training/readers", 200),
    ("sup_north", "/training/sets", 200), ("sup_north", SET_PATH, 200), ("sup_north", "/training/upload", 200),
    ("trainee", "/training", 303), ("trainee", TRAINEE_PAGE, 200), ("trainee", f"/training/trainee/{PERSISTENT}", 403),
    ("trainee", f"/training/trainee/{SHIFTED}", 403), ("trainee", f"/training/team/{TEAM_NORTH}", 403),
    ("trainee", f"/training/team/{TEAM_SOUTH}", 403), ("trainee", "/training/readers", 403),
    ("trainee", "/training/sets", 403), ("trainee", SET_PATH, 403), ("trainee", "/training/upload", 200),
    ("trainee", "/", 303), ("trainee", "/transfers", 403), ("trainee", "/api/studies", 403),
    ("trainee", "/api/transfers", 403),
]


@pytest.mark.parametrize(("user", "path", "expected"), ACCESS)
def test_each_role_reaches_only_what_it_may(app: object, user: str, path: str, expected: int) -> None:
    response = Browser(app, user).get(path)
    assert response.status_code == expected, response.text[:300]
    if expected == 403:
        text = response.json()["detail"] if path.startswith("/api/") else response.text
        assert "trainee" in text or "supervises" in text  # the reason, not just a refusal


def test_refusals_say_why(app: object) -> None:
    page = Browser(app, "trainee").get(f"/training/trainee/{PERSISTENT}").text
    assert f"trainee is a trainee and sees only their own results, not those of {PERSISTENT}" in page
    page = Browser(app, "sup_north").get(f"/training/team/{TEAM_SOUTH}").text
    assert f"team {TEAM_SOUTH} is not one that sup_north supervises" in page
    assert Browser(app, "trainee").get("/").headers["location"] == "/training"
    assert Browser(app, "trainee").get("/training").headers["location"] == TRAINEE_PAGE


def test_the_trainee_nav_leaves_out_the_node_s_pages(app: object) -> None:
    trainee = Browser(app, "trainee").get(TRAINEE_PAGE).text
    assert 'href="/transfers"' not in trainee and 'href="/training"' in trainee
    assert 'href="/transfers"' in Browser(app, "admin").get(TRAINEE_PAGE).text


def test_trainee_dashboard_shows_every_attempt_with_its_figures_and_plots(app: object, site: TrainingSite) -> None:
    with site.session_factory() as session:
        progress = trainee_progress(session, IMPROVING)
        scored = session.scalar(select(Result.id).where(Result.kind == "reader_score").limit(1))
    assert scored is not None and len(progress.attempts) == 4  # two cases, two attempts each
    page = Browser(app, "trainee").get(TRAINEE_PAGE).text
    assert page.count('class="attempt"') == len(progress.attempts)
    for attempt in progress.attempts:
        assert attempt.dice is not None and f"{attempt.dice:.3f}" in page
        assert f"{attempt.hausdorff_mm:.1f} mm" in page
        assert f"{attempt.t1_difference_ms:+.1f} ms" in page
    # Plots drawn on the server: the per-case lines, the sequence, the T1 difference and the bias bullseye.
    assert page.count("<svg") >= 4 + len([a for a in progress.attempts if a.segment_t1_differences_ms])
    assert "Dice on each case over repeated attempts" in page and "T1 by segment" in page
    # A contour's error is named, with what to do about it (the persistent trainee keeps the epicardial fat).
    persistent = Browser(app, "admin").get(f"/training/trainee/{PERSISTENT}").text
    with site.session_factory() as session:
        kept = [a for a in trainee_progress(session, PERSISTENT).attempts if a.error_mode == "epicardial_fat"]
    assert kept and kept[0].advice in persistent and "Error: epicardial border drawn outside the fat" in persistent
    # Accreditation per training set, with each criterion's reason.
    (status,) = progress.accreditation
    assert status.training_set in page
    for outcome in status.outcomes:
        assert html.escape(outcome.why, quote=False) in page


def test_overlays_are_served_to_whom_may_see_them(app: object, site: TrainingSite) -> None:
    with site.session_factory() as session:
        attempts = trainee_progress(session, IMPROVING).attempts
    index = next(n for n, a in enumerate(attempts) if a.overlay_png)
    url = f"{TRAINEE_PAGE}/attempts/{index}/overlay.png"
    assert f'src="{url}"' in Browser(app, "trainee").get(TRAINEE_PAGE).text
    image = Browser(app, "trainee").get(url)
    assert image.status_code == 200 and image.headers["content-type"] == "image/png"
    assert image.content.startswith(b"\x89PNG")
    assert Browser(app, "lonely").get(url).status_code == 403
    assert Browser(app, "trainee").get(f"{TRAINEE_PAGE}/attempts/999/overlay.png").status_code == 404


def test_team_dashboard_sets_the_team_s_trainees_side_by_side(app: object, site: TrainingSite) -> None:
    with site.session_factory() as session:
        summary = team_summary(session, TEAM_NORTH)
    page = Browser(app, "sup_north").get(f"/training/team/{TEAM_NORTH}").text
    assert {t.reader for t in summary.trainees} == {IMPROVING, PERSISTENT}
    assert f'href="/training/trainee/{IMPROVING}"' in page and f'href="/training/trainee/{PERSISTENT}"' in page
    assert SHIFTED not in page
    for case in summary.cases:
        assert case.case_label in page
        if case.inter_observer_dice is not None:
            assert f"{case.inter_observer_dice:.3f}" in page
        if case.t1_cv_percent is not None:
            assert f"{case.t1_cv_percent:.1f} %" in page
    assert "Each trainee&#39;s Dice over their attempts" in page or "Dice over their attempts" in page
    for name in summary.ready:
        assert f'<span class="pill pill-good">{name}</span>' in page


def test_pdf_links_lead_to_pdfs(app: object) -> None:
    page = Browser(app, "sup_north").get(f"/training/team/{TEAM_NORTH}").text
    links = re.findall(r'href="([^"]+\.pdf)"', page)
    if not links:  # the renderer is not installed: no link, never a dead one
        pytest.skip("PDF renderer not installed")
    for link in links:
        response = Browser(app, "sup_north").get(link)
        assert response.status_code == 200 and response.content.startswith(b"%PDF")
    assert Browser(app, "trainee").get(f"/training/team/{TEAM_NORTH}/report.pdf").status_code == 403
    assert Browser(app, "trainee").get(f"/training/trainee/{PERSISTENT}/report.pdf").status_code == 403


def test_supervisor_maps_a_dicom_name_and_trainees_may_not(app: object, site: TrainingSite) -> None:
    supervisor = Browser(app, "sup_north")
    done = supervisor.post("/training/readers", {"action": "add_alias", "reader": PERSISTENT,
                                                 "pattern": "ROE^RICHARD*"}, form_page="/training/readers")
    assert done.status_code == 303, done.text[:300]
    assert "ROE^RICHARD*" in supervisor.get(done.headers["location"]).text
    with site.session_factory() as session:
        assert session.scalar(select(ReaderAlias.pattern).where(ReaderAlias.pattern == "ROE^RICHARD*"))
    # Not their team's reader; a trainee may change nothing; a taken alias is refused with the reason.
    refused = supervisor.post("/training/readers", {"action": "add_alias", "reader": SHIFTED, "pattern": "X"},
                              form_page="/training/readers")
    assert refused.status_code == 403 and "supervises" in refused.json()["detail"]
    trainee = Browser(app, "trainee")
    assert trainee.post("/training/readers", {"action": "set_team", "reader": IMPROVING, "team": "x"},
                        form_page=TRAINEE_PAGE).status_code == 403
    again = supervisor.post("/training/readers", {"action": "add_alias", "reader": IMPROVING,
                                                  "pattern": "roe^richard*"}, form_page="/training/readers")
    assert again.status_code == 422 and "already" in again.text
    # Without the form token nothing changes.
    bare = supervisor.client.post("/training/readers", data={"action": "add_reader", "reader": "Z"},
                                  headers=_basic("sup_north"), follow_redirects=False)
    assert bare.status_code == 403


def test_supervisor_sets_references_consensus_and_criteria(app: object, site: TrainingSite) -> None:
    supervisor = Browser(app, "sup_north")
    with site.session_factory() as session:
        label = session.scalars(select(TrainingCase.label).order_by(TrainingCase.id)).first()
    steps = [
        {"action": "set_reference", "label": label, "policy": "team_average"},
        {"action": "auto_consensus"},  # the box unticked: off
        {"action": "criteria", "min_mean_dice": "0.82", "max_abs_t1_difference_ms": "25", "last_cases": "2",
         "no_critical_error": "on", "critical_epicardial_fat": "on"},
    ]
    for data in steps:
        response = supervisor.post(SET_PATH, data, form_page=SET_PATH)
        assert response.status_code == 303, response.text[:400]
    with site.session_factory() as session:
        training_set = session.scalars(select(TrainingSet).where(TrainingSet.name == TRAINING_SET)).one()
        assert training_set.auto_consensus is False
        assert training_set.cases[0].reference_policy == "team_average"
        criteria = Criteria.from_json(training_set.criteria)
        assert (criteria.min_mean_dice, criteria.max_abs_t1_difference_ms, criteria.last_cases) == (0.82, 25.0, 2)
        assert criteria.critical_error_modes == ("epicardial_fat",)
    page = supervisor.get(SET_PATH).text
    assert "mean Dice &gt;= 0.82 over the last 2 cases" in page
    bad = supervisor.post(SET_PATH, {"action": "criteria", "min_mean_dice": "1.5"}, form_page=SET_PATH)
    assert bad.status_code == 422 and "minimum mean Dice must lie in (0, 1]" in bad.text
    bad = supervisor.post(SET_PATH, {"action": "criteria", "min_mean_dice": "high"}, form_page=SET_PATH)
    assert bad.status_code == 400 and "must be a number" in bad.text
    missing = supervisor.get("/training/sets/none%20such")
    assert missing.status_code == 404


def test_admin_links_a_web_user_to_a_reader(app: object, site: TrainingSite) -> None:
    admin = Browser(app, "admin")
    response = admin.post("/training/readers", {"action": "link_user", "username": "lonely", "reader": SHIFTED,
                                                "web_role": "trainee"}, form_page="/training/readers")
    assert response.status_code == 303
    assert Browser(app, "lonely").get(f"/training/trainee/{SHIFTED}").status_code == 200
    assert Browser(app, "lonely").get(f"/training/trainee/{PERSISTENT}").status_code == 403
    assert admin.post("/training/readers", {"action": "link_user", "username": "lonely", "reader": PERSISTENT,
                                            "web_role": "trainee"}, form_page="/training/readers").status_code == 303
    refused = Browser(app, "sup_north").post("/training/readers", {"action": "link_user", "username": "lonely",
                                                                   "reader": IMPROVING},
                                             form_page="/training/readers")
    assert refused.status_code == 400 and "only an admin" in refused.text
    with site.session_factory() as session:
        assert session.scalars(select(WebUser).where(WebUser.username == "lonely")).one().role == "trainee"


def test_training_pages_without_login_are_an_admin_s(site: TrainingSite, tmp_path: Path) -> None:
    settings = site.settings.model_copy(update={"web": site.settings.web.model_copy(update={"login": False})})
    client = TestClient(create_app(settings, site.session_factory))
    assert client.get(f"/training/team/{TEAM_SOUTH}").status_code == 200


def test_supervisor_makes_a_training_set_from_ticked_studies_and_adds_a_case(app: object,
                                                                             site: TrainingSite) -> None:
    supervisor = Browser(app, "sup_north")
    first, second = (case.study_instance_uid for case in site.outcome.cases)
    form = supervisor.get("/training/sets").text
    assert f'name="study" value="{first}"' in form and f'name="study" value="{second}"' in form
    supervisor.get("/training/sets")
    made = supervisor.client.post("/training/sets", data={"name": "second look", "study": [second],
                                                          "studies": "", "auto_consensus": "on",
                                                          "csrf_token": supervisor.token},
                                  headers=_basic("sup_north"), follow_redirects=False)
    assert made.status_code == 303, made.text[:400]
    page = supervisor.get(made.headers["location"]).text
    assert second in page and "made training set second look" in page
    # The study left over is offered as the next case.
    assert f'<option value="{first}">' in page
    added = supervisor.post("/training/sets/second%20look", {"action": "add_case", "study": first, "label": ""},
                            form_page="/training/sets/second%20look")
    assert added.status_code == 303
    with site.session_factory() as session:
        cases = session.scalars(select(TrainingCase).join(TrainingSet).where(TrainingSet.name == "second look")
                                .order_by(TrainingCase.id)).all()
        assert [(c.study_instance_uid, c.label) for c in cases] == [(second, "case 1"), (first, "case 2")]
    again = supervisor.post("/training/sets", {"name": "second look", "studies": first}, form_page="/training/sets")
    assert again.status_code == 422 and "exists already" in again.text
    empty = supervisor.post("/training/sets", {"name": "third"}, form_page="/training/sets")
    assert empty.status_code == 400 and "tick or list at least one study" in empty.text


def test_the_dashboards_as_json_follow_the_same_rule(app: object, site: TrainingSite) -> None:
    trainee = Browser(app, "trainee")
    mine = trainee.get(f"/api/training/trainee/{IMPROVING}")
    assert mine.status_code == 200
    with site.session_factory() as session:
        progress = trainee_progress(session, IMPROVING)
    body = mine.json()
    assert body["reader"] == IMPROVING and len(body["attempts"]) == len(progress.attempts)
    assert [a["dice"] for a in body["attempts"]] == [a.dice for a in progress.attempts]
    refused = trainee.get(f"/api/training/trainee/{PERSISTENT}")
    assert refused.status_code == 403 and "sees only their own results" in refused.json()["detail"]
    assert trainee.get(f"/api/training/team/{TEAM_NORTH}").status_code == 403
    team = Browser(app, "sup_north").get(f"/api/training/team/{TEAM_NORTH}")
    assert team.status_code == 200 and {t["reader"] for t in team.json()["trainees"]} == {IMPROVING, PERSISTENT}
    assert Browser(app, "sup_north").get(f"/api/training/team/{TEAM_SOUTH}").status_code == 403
    assert Browser(app, "admin").get("/api/training/team/nowhere").status_code == 404
