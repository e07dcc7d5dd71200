"""Which contours a reader is scored against: the one rule the offline analysis, the reader job and re-scoring share.

:func:`decide_reference` is a pure function of the readers whose contours are available (on a slice for the
analysis, in the study for the re-scoring decision), with their roles and teams, the training case's configured
policy (None: not a training case, or automatic) and whether the automatic consensus is on:

- the gold standard reader (the case's, else the site's ``[scoring] gold_standard``) is the reference, never scored;
- a case's explicit policy is followed without fallback: while its reference is missing the reader is not scored,
  the choice says why, and re-scoring scores the reader again once it arrives;
- automatic: the gold standard when it is there, else the STAPLE of the experts (at least
  :data:`MIN_EXPERTS_FOR_CONSENSUS`, the scored reader among them when it is one), else the consensus model's contour
  drawn from the reader's own when the automatic consensus is on, else none;
- the team average is the STAPLE of the contours of the reader's team-mates (trainees of the same team, the scored
  reader left out so that its own contour does not pull the reference towards itself; at least
  :data:`MIN_READERS_FOR_TEAM_AVERAGE`).

Who is an expert comes from the reader table where it has a row, else from the name: labels starting with
:data:`EXPERT_PREFIX` (:func:`role_by_convention`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum

from db.models import ReaderRole, ReferencePolicy

#: Readers whose name starts with this are experts when the reader table does not say otherwise.
EXPERT_PREFIX = "expert"
MIN_EXPERTS_FOR_CONSENSUS = 2
MIN_READERS_FOR_TEAM_AVERAGE = 2


class ReferenceSource(str, Enum):
    """What a reader was scored against (the values the results record)."""

    GOLD_STANDARD = "gold_standard"
    STAPLE = "staple"  # the experts' STAPLE
    TEAM_AVERAGE = "team_average"  # the STAPLE of the reader's team-mates
    CONSENSUS_MODEL = "consensus_model"  # the consensus model's contour, drawn from the reader's own
    NONE = "none"


#: How a score against the consensus model's contour names its reference.
CONSENSUS_MODEL_REFERENCE = ReferenceSource.CONSENSUS_MODEL.value


@dataclass(frozen=True)
class ReaderInfo:
    """What the rule needs to know of a reader: its role and its team ("" for none)."""

    role: ReaderRole
    team: str = ""


@dataclass(frozen=True)
class CasePolicy:
    """A training case's configured reference: its policy (None: automatic) and its gold standard reader."""

    policy: ReferencePolicy | None = None
    gold_standard_reader: str | None = None


@dataclass(frozen=True)
class ReferenceChoice:
    """The reference chosen for one reader: what it is, whose contours make it, and why, in words."""

    source: ReferenceSource
    readers: tuple[str, ...]
    reason: str

    def scores(self, reader: str) -> bool:
        """Whether ``reader`` is scored against this reference: there is one, and it is not the reader's own gold
        standard contour (an expert is scored against the experts' STAPLE that it is part of)."""
        return self.source is not ReferenceSource.NONE and not (
            self.source is ReferenceSource.GOLD_STANDARD and reader in self.readers)


def is_expert(reader: str) -> bool:
    """Whether ``reader``'s name marks an expert by the naming convention."""
    return reader.lower().startswith(EXPERT_PREFIX)


def role_by_convention(reader: str) -> ReaderInfo:
    """A reader without a row in the reader table: an expert by name, else a trainee, in no team."""
    return ReaderInfo(ReaderRole.EXPERT if is_expert(reader) else ReaderRole.TRAINEE)


def decide_reference(
    reader: str,
    available: Mapping[str, ReaderInfo],
    case: CasePolicy | None = None,
    *,
    auto_consensus: bool = True,
    gold_standard: str | None = None,
) -> ReferenceChoice:
    """The reference ``reader`` is scored against.

    Parameters
    ----------
    reader
        The reader to score.
    available
        Every reader whose contours are available (``reader`` itself may be among them), with role and team.
    case
        The training case's configured reference; None when the study is no training case (automatic).
    auto_consensus
        Whether the consensus model is the reference of last resort under the automatic policy.
    gold_standard
        The site's gold standard reader (``[scoring] gold_standard``); a case's own one takes precedence.

    Returns
    -------
    ReferenceChoice
        Source, the readers whose contours make it (sorted), and the reason in words.
    """
    policy = case.policy if case is not None else None
    gold = (case.gold_standard_reader if case is not None and case.gold_standard_reader else None) or gold_standard
    if gold is not None and reader == gold and policy in (None, ReferencePolicy.GOLD_STANDARD):
        return ReferenceChoice(ReferenceSource.GOLD_STANDARD, (reader,), "is the gold standard: the reference, "
                               "not scored")
    if policy is ReferencePolicy.GOLD_STANDARD:
        if gold is None:
            return _none("the case's policy is a gold standard, but it names no gold standard reader")
        if gold in available:
            return ReferenceChoice(ReferenceSource.GOLD_STANDARD, (gold,), f"the case's gold standard {gold}")
        return _none(f"the case's gold standard {gold} has not contoured this yet")
    if policy is ReferencePolicy.EXPERT_STAPLE:
        return _experts(available) or _none(
            f"the case's policy is the experts' STAPLE; fewer than {MIN_EXPERTS_FOR_CONSENSUS} experts "
            "have contoured this yet")
    if policy is ReferencePolicy.CONSENSUS_MODEL:
        return ReferenceChoice(ReferenceSource.CONSENSUS_MODEL, (), "the case's policy is the consensus model")
    if policy is ReferencePolicy.TEAM_AVERAGE:
        return _team_average(reader, available)
    # Automatic
    if gold is not None and gold in available:
        return ReferenceChoice(ReferenceSource.GOLD_STANDARD, (gold,), f"gold standard {gold}")
    experts = _experts(available)
    if experts is not None:
        missing = f"; gold standard {gold} not received yet" if gold is not None else ""
        return ReferenceChoice(experts.source, experts.readers, experts.reason + missing)
    n_experts = sum(info.role is ReaderRole.EXPERT for info in available.values())
    why = (f"no gold standard{f' ({gold}) yet' if gold is not None else ''} and {n_experts} expert(s), at least "
           f"{MIN_EXPERTS_FOR_CONSENSUS} needed for their consensus")
    if auto_consensus:
        return ReferenceChoice(ReferenceSource.CONSENSUS_MODEL, (), f"consensus model: {why}")
    return _none(f"{why}; the automatic consensus is off")


def _experts(available: Mapping[str, ReaderInfo]) -> ReferenceChoice | None:
    experts = tuple(sorted(name for name, info in available.items() if info.role is ReaderRole.EXPERT))
    if len(experts) < MIN_EXPERTS_FOR_CONSENSUS:
        return None
    return ReferenceChoice(ReferenceSource.STAPLE, experts, f"STAPLE of the experts {', '.join(experts)}")


def _team_average(reader: str, available: Mapping[str, ReaderInfo]) -> ReferenceChoice:
    info = available.get(reader)
    team = info.team if info is not None else ""
    if not team:
        return _none(f"the case's policy is the team average, and {reader} belongs to no team")
    mates = tuple(sorted(name for name, other in available.items()
                         if name != reader and other.team == team and other.role is ReaderRole.TRAINEE))
    if len(mates) < MIN_READERS_FOR_TEAM_AVERAGE:
        return _none(f"the case's policy is the team average; {len(mates)} other trainee(s) of team {team} have "
                     f"contoured this, at least {MIN_READERS_FOR_TEAM_AVERAGE} needed")
    return ReferenceChoice(ReferenceSource.TEAM_AVERAGE, mates, f"STAPLE of team {team}: {', '.join(mates)}")


def _none(reason: str) -> ReferenceChoice:
    return ReferenceChoice(ReferenceSource.NONE, (), reason)
