"""PDF reports of the training programme (WeasyPrint): a trainee's progress and a team's summary, with plots."""

from reports.pdf.render import NOT_FOR_CLINICAL_USE, team_html, team_pdf, trainee_html, trainee_pdf

__all__ = ["NOT_FOR_CLINICAL_USE", "team_html", "team_pdf", "trainee_html", "trainee_pdf"]
