"""Whether the trainee and team PDF reports can be rendered on this node (their renderer is installed)."""

from __future__ import annotations

from importlib.util import find_spec


def pdf_reports_available() -> bool:
    """True when the PDF renderer (``reports.pdf``) is present, so the pages may link to the downloads."""
    try:
        return find_spec("reports.pdf.render") is not None
    except ModuleNotFoundError:
        return False
