"""The node's log: its own lines at ``[logging] level``, the libraries' chatter only from ``[logging] libraries``.

At INFO, highdicom logs every module it copies into a derived object ("copy attributes of module ...", dozens per
Secondary Capture), pynetdicom every association and DIMSE message, and huey every task it runs: they drowned out
the node's own lines, which already say what was received, analysed and sent.
"""

from __future__ import annotations

import logging

from config import Settings

#: Libraries whose loggers follow ``[logging] libraries`` instead of ``[logging] level``.
QUIET_LIBRARIES = ("highdicom", "pynetdicom", "huey")
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure_logging(settings: Settings) -> None:
    """Log to standard error at ``[logging] level``; the libraries of :data:`QUIET_LIBRARIES` log at the higher of
    that level and ``[logging] libraries`` (WARNING by default; INFO or DEBUG brings their lines back)."""
    node_level = logging.getLevelName(settings.logging.level.upper())
    library_level = logging.getLevelName(settings.logging.libraries.upper())
    logging.basicConfig(level=node_level, format=LOG_FORMAT)
    for name in QUIET_LIBRARIES:
        logging.getLogger(name).setLevel(max(node_level, library_level))
