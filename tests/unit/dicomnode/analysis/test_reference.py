"""The reference policy as a table: who is available, the case's policy, the automatic consensus -> the reference
and why."""

from __future__ import annotations

import pytest

from db.models import ReaderRole, ReferencePolicy
from dicomnode.analysis.reference import (
    CasePolicy,
    ReaderInfo,
    ReferenceSource,
    decide_reference,
    role_by_convention,
)

T, E = ReaderRole.TRAINEE, ReaderRole.EXPERT


def readers(*names: str, team: str = "") -> dict[str, ReaderInfo]:
    return {name: ReaderInfo(role_by_convention(name).role, team) for name in names}


EXPERTS = readers("expert1", "expert2")
TEAM_A = readers("trainee1", "trainee2", "trainee3", team="A")
GOLD = readers("truth")
AUTO = None
GOLD_CASE = CasePolicy(ReferencePolicy.GOLD_STANDARD, "truth")

# (scored reader, available, case, auto consensus, site gold standard) -> (source, readers, words in the reason)
CASES = [
    # automatic, not a training case
    ("trainee1", {**TEAM_A, **EXPERTS}, AUTO, True, None, ReferenceSource.STAPLE, ("expert1", "expert2"), "STAPLE"),
    ("expert1", {**EXPERTS}, AUTO, True, None, ReferenceSource.STAPLE, ("expert1", "expert2"), "experts"),
    ("trainee1", {**TEAM_A, **readers("expert1")}, AUTO, True, None, ReferenceSource.CONSENSUS_MODEL, (),
     "1 expert(s)"),
    ("trainee1", {**TEAM_A, **readers("expert1")}, AUTO, False, None, ReferenceSource.NONE, (),
     "automatic consensus is off"),
    ("trainee1", {**TEAM_A, **EXPERTS, **GOLD}, AUTO, True, "truth", ReferenceSource.GOLD_STANDARD, ("truth",),
     "gold standard truth"),
    # the site's gold standard not there yet: the experts meanwhile, saying so
    ("trainee1", {**TEAM_A, **EXPERTS}, AUTO, True, "truth", ReferenceSource.STAPLE, ("expert1", "expert2"),
     "truth not received yet"),
    ("truth", {**GOLD, **EXPERTS}, AUTO, True, "truth", ReferenceSource.GOLD_STANDARD, ("truth",),
     "is the gold standard"),
    # an automatic case with its own gold standard takes it before the site's
    ("trainee1", {**TEAM_A, **GOLD, **readers("boss")}, CasePolicy(None, "boss"), True, "truth",
     ReferenceSource.GOLD_STANDARD, ("boss",), "boss"),
    # explicit policies: followed without fallback
    ("trainee1", {**TEAM_A, **GOLD}, GOLD_CASE, True, None, ReferenceSource.GOLD_STANDARD, ("truth",), "truth"),
    ("trainee1", {**TEAM_A, **EXPERTS}, GOLD_CASE, True, None, ReferenceSource.NONE, (), "not contoured"),
    ("trainee1", {**TEAM_A}, CasePolicy(ReferencePolicy.GOLD_STANDARD), True, None, ReferenceSource.NONE, (),
     "names no gold standard"),
    ("trainee1", {**TEAM_A, **EXPERTS, **GOLD}, CasePolicy(ReferencePolicy.EXPERT_STAPLE), True, "truth",
     ReferenceSource.STAPLE, ("expert1", "expert2"), "STAPLE"),
    ("trainee1", {**TEAM_A, **readers("expert1")}, CasePolicy(ReferencePolicy.EXPERT_STAPLE), True, None,
     ReferenceSource.NONE, (), "fewer than 2 experts"),
    ("trainee1", {**TEAM_A, **EXPERTS}, CasePolicy(ReferencePolicy.CONSENSUS_MODEL), False, None,
     ReferenceSource.CONSENSUS_MODEL, (), "consensus model"),
    # team average: the team-mates, never the reader itself, never other teams or experts
    ("trainee1", {**TEAM_A, **readers("trainee9", team="B"), **EXPERTS}, CasePolicy(ReferencePolicy.TEAM_AVERAGE),
     True, None, ReferenceSource.TEAM_AVERAGE, ("trainee2", "trainee3"), "team A"),
    ("trainee1", {**readers("trainee1", "trainee2", team="A")}, CasePolicy(ReferencePolicy.TEAM_AVERAGE), True,
     None, ReferenceSource.NONE, (), "1 other trainee(s) of team A"),
    ("trainee9", {**TEAM_A, **readers("trainee9")}, CasePolicy(ReferencePolicy.TEAM_AVERAGE), True, None,
     ReferenceSource.NONE, (), "belongs to no team"),
]


@pytest.mark.parametrize(("reader", "available", "case", "auto", "site_gold", "source", "refs", "words"), CASES)
def test_the_reference_table(reader, available, case, auto, site_gold, source, refs, words) -> None:  # noqa: ANN001
    choice = decide_reference(reader, available, case, auto_consensus=auto, gold_standard=site_gold)
    assert (choice.source, choice.readers) == (source, refs), choice.reason
    assert words in choice.reason


def test_who_is_scored() -> None:
    gold = decide_reference("truth", {**GOLD}, None, gold_standard="truth")
    assert not gold.scores("truth")
    staple = decide_reference("expert1", EXPERTS)
    assert staple.scores("expert1") and staple.scores("trainee1")
    assert not decide_reference("trainee1", {}, None, auto_consensus=False).scores("trainee1")
    assert decide_reference("trainee1", {}, None).scores("trainee1")  # the consensus model


def test_roles_from_the_table_beat_the_naming_convention() -> None:
    # A senior reader named without the prefix, marked expert in the reader table, counts as an expert.
    available = {"dr_who": ReaderInfo(E), "expert1": ReaderInfo(E), "expert2": ReaderInfo(T)}
    choice = decide_reference("trainee1", available)
    assert choice.readers == ("dr_who", "expert1")
