"""Which contours a reader is scored against: the rule the offline analysis, the reader job and re-scoring share.

The named gold-standard reader (``[scoring] gold_standard``) when it drew the slice; else the STAPLE consensus of
the expert readers (labels starting with :data:`EXPERT_PREFIX`, at least :data:`MIN_EXPERTS_FOR_CONSENSUS` of
them); else, in the reader job only, the consensus model's contour drawn from the reader's own
(:data:`CONSENSUS_MODEL_REFERENCE`).
"""

from __future__ import annotations

from enum import Enum

#: Readers whose name starts with this form the consensus when no gold standard is named.
EXPERT_PREFIX = "expert"
MIN_EXPERTS_FOR_CONSENSUS = 2
#: How a score against the consensus model's contour names its reference.
CONSENSUS_MODEL_REFERENCE = "consensus_model"


class ReferenceSource(str, Enum):
    """What the readers of a slice were scored against."""

    GOLD_STANDARD = "gold_standard"
    STAPLE = "staple"
    NONE = "none"


def is_expert(reader: str) -> bool:
    """Whether ``reader``'s contours count towards the experts' consensus."""
    return reader.lower().startswith(EXPERT_PREFIX)
