"""The reference a study offers a reader, as the re-scoring decision sees it: which readers' arrival changes it
(a gold standard, experts once there are two) and which do not (trainees, the reader's own objects)."""

from __future__ import annotations

from pathlib import Path

from dicomnode.analysis.reference import CONSENSUS_MODEL_REFERENCE
from dicomnode.jobs.rescoring import ContourObject, study_reference


def _object(reader: str | None, n: int = 0, sha256: str = "a" * 64) -> ContourObject:
    return ContourObject(Path(f"{reader}-{n}.dcm"), f"1.2.3.{n}.{reader}", sha256, reader)


def test_the_gold_standard_arriving_changes_a_trainee_s_reference() -> None:
    # Until the named gold standard arrives the experts' STAPLE stands in (the automatic rule).
    before = study_reference("trainee1", [_object("trainee2"), _object("expert1"), _object("expert2")], "truth")
    assert (before.source, before.readers) == ("staple", ("expert1", "expert2"))
    assert study_reference("trainee1", [_object("trainee2")], "truth").source == CONSENSUS_MODEL_REFERENCE
    after = study_reference("trainee1", [_object("trainee2"), _object("truth")], "truth")
    assert (after.source, after.readers) == ("gold_standard", ("truth",))
    assert after.digest != before.digest and len(after.digest) == 16
    # The gold standard changing its contour is a new reference too.
    assert study_reference("trainee1", [_object("truth", sha256="b" * 64)], "truth").digest != after.digest


def test_the_gold_standard_s_own_reference_never_changes() -> None:
    alone = study_reference("truth", [], "truth")
    assert study_reference("truth", [_object("trainee1"), _object("expert1"), _object("expert2")],
                           "truth").digest == alone.digest


def test_experts_make_a_reference_once_there_are_two() -> None:
    one = study_reference("trainee1", [_object("expert1")], None)
    assert one.source == CONSENSUS_MODEL_REFERENCE
    assert one.digest == study_reference("trainee1", [], None).digest  # one expert changes nothing yet
    two = study_reference("trainee1", [_object("expert1"), _object("Expert2")], None)
    assert (two.source, two.readers) == ("staple", ("Expert2", "expert1"))
    three = study_reference("trainee1", [_object("expert1"), _object("Expert2"), _object("expert3")], None)
    assert len({one.digest, two.digest, three.digest}) == 3


def test_an_expert_is_scored_against_the_experts_including_itself() -> None:
    # As the job scores it: the STAPLE of every expert of the study, itself among them.
    with_one_other = study_reference("expert1", [_object("expert2")], None)
    assert (with_one_other.source, with_one_other.readers) == ("staple", ("expert1", "expert2"))
    assert study_reference("expert1", [], None).source == CONSENSUS_MODEL_REFERENCE
    # Its reference changes with the other experts' contours, not with its own further objects.
    assert study_reference("expert1", [_object("expert2"), _object("expert3")], None).digest != \
        with_one_other.digest
    assert study_reference("expert1", [_object("expert2"), _object("expert1", 7)], None).digest == \
        with_one_other.digest


def test_trainees_and_unlabelled_objects_change_no_one_s_reference() -> None:
    experts = [_object("expert1"), _object("expert2")]
    for reader in ("trainee1", "expert1"):
        base = study_reference(reader, experts, None).digest
        assert study_reference(reader, [*experts, _object("trainee3"), _object(None, 5)], None).digest == base
    base = study_reference("trainee1", [_object("truth")], "truth").digest
    assert study_reference("trainee1", [_object("truth"), _object("trainee2"), *experts], "truth").digest == base
