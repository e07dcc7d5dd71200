"""One router per resource: health, studies, series, transfers (JSON under /api, pages beside them)."""
