"""The admin web app (FastAPI with Jinja2 pages): studies, series, jobs, results and outgoing transfers."""

from reports.web.app import create_app

__all__ = ["create_app"]
