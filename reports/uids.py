"""The one recipe for the UIDs the node derives: a rebuilt object gets the same UIDs as the first build."""

from __future__ import annotations

import uuid


def name_based_uid(*parts: object) -> str:
    """A ``2.25.`` UID from a name-based (version 5) UUID of ``parts`` joined by ``/`` (PS3.5 B.2).

    pydicom's ``generate_uid`` ignores its entropy sources under the ``2.25`` root and would give a random UID.
    """
    name = "/".join(str(part) for part in parts)
    return f"2.25.{uuid.uuid5(uuid.NAMESPACE_URL, name).int}"
