"""The container's health check: ``python -m reports.web.healthcheck [URL]``.

Asks the node's /healthz (default ``http://127.0.0.1:8080/healthz``) and exits 0 only when it answers "ok"; a
"degraded" or "failing" node, or no answer, exits 1, so that ``docker ps`` shows the container unhealthy. The
status and the reasons are printed (Docker keeps them: ``docker inspect --format '{{json .State.Health}}'``).
Only the standard library: it runs in a slim image and starts fast.
"""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence

DEFAULT_URL = "http://127.0.0.1:8080/healthz"
TIMEOUT_S = 4.0


def check(url: str = DEFAULT_URL, *, timeout_s: float = TIMEOUT_S) -> tuple[int, str]:
    """The exit status (0: ok, 1: degraded, failing or unreachable) and the line to print."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:  # noqa: S310 (a configured local URL)
            body = response.read()
    except urllib.error.HTTPError as error:  # 503 carries the same JSON body with the reasons
        body = error.read()
    except (urllib.error.URLError, OSError) as error:
        return 1, f"unreachable: {url}: {error}"
    try:
        health = json.loads(body)
        status = str(health["status"])
        problems = [str(problem) for problem in health.get("problems", [])]
    except (ValueError, KeyError, TypeError):
        return 1, f"unreadable answer from {url}"
    line = status + (": " + "; ".join(problems) if problems else "")
    return (0 if status == "ok" else 1), line


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    code, line = check(args[0] if args else DEFAULT_URL)
    print(line)
    return code


if __name__ == "__main__":
    sys.exit(main())
