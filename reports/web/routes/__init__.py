"""One router per resource: health, login, studies, series, transfers (JSON under /api, pages beside them)."""
