"""Headless Chromium against the web app: screenshots and the DOM after load.

:class:`AppServer` serves an ASGI app with uvicorn on 127.0.0.1 on a free port in a thread and records every
request it answers (so a test can tell that the browser fetched an image). Its ``browser_cookie`` stands for a
browser that has logged in: Chromium runs once per call with a throw-away profile and so cannot keep a session
cookie between runs, so a test logs in itself (POST /login) and the server adds that ``Cookie`` header to every
request that arrives without one. :class:`Chromium` runs
``/usr/bin/chromium --headless`` once per call with a throw-away profile, no network services of its own and no
sandbox (the tests may run as root); ``screenshot`` writes a PNG of the window, ``dump_dom`` returns the
serialised DOM after the page loaded.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import uvicorn

from tests.integration.conftest import LOOPBACK, find_free_port

CHROMIUM = Path("/usr/bin/chromium")
#: Headless, as root, without GPU, QUIC, first-run dialogs or background traffic (nothing outside 127.0.0.1).
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--hide-scrollbars",
    "--force-device-scale-factor=1",
)
WINDOW_SIZE = (1280, 1600)

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
Asgi = Callable[[Scope, Receive, Send], Awaitable[None]]


def chromium_available() -> bool:
    return CHROMIUM.is_file() and os.access(CHROMIUM, os.X_OK)


@dataclass(frozen=True)
class Answered:
    """One HTTP request the app server answered."""

    method: str
    path: str
    status: int


class _RecordRequests:
    """ASGI middleware: appends (method, path, status) of each HTTP response to ``log``."""

    def __init__(self, app: Asgi, log: list[Answered]) -> None:
        self.app = app
        self.log = log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def recording_send(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                self.log.append(Answered(scope["method"], scope["path"], int(message["status"])))
            await send(message)

        await self.app(scope, receive, recording_send)


class _LoggedInBrowser:
    """ASGI middleware: adds ``<cookie()>`` to each HTTP request's cookies (that have no cookie of that name) while
    ``cookie()`` returns one, as the browser's own cookie store would after a login; the browser's other cookies
    (the form token's) stay."""

    def __init__(self, app: Asgi, cookie: Callable[[], str | None]) -> None:
        self.app = app
        self.cookie = cookie

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        value = self.cookie()
        if scope["type"] == "http" and value:
            name = value.split("=", 1)[0].encode("latin-1")
            own = [header for key, header in scope["headers"] if key == b"cookie"]
            if not any(name + b"=" in header for header in own):
                merged = b"; ".join([*own, value.encode("latin-1")])
                headers = [(key, header) for key, header in scope["headers"] if key != b"cookie"]
                scope = {**scope, "headers": [*headers, (b"cookie", merged)]}
        await self.app(scope, receive, send)


@dataclass
class AppServer:
    """An ASGI app served by uvicorn on 127.0.0.1:``port`` in a daemon thread (use as a context manager).

    ``browser_cookie`` (e.g. ``"myomap_session=..."``, from a real POST /login) is sent on behalf of every client
    that sends no cookie of its own; None sends nothing (a browser that has not logged in)."""

    app: Asgi
    port: int = field(default_factory=find_free_port)
    requests: list[Answered] = field(default_factory=list)
    browser_cookie: str | None = None
    _server: uvicorn.Server | None = None
    _thread: threading.Thread | None = None

    def url(self, path: str = "/") -> str:
        return f"http://{LOOPBACK}:{self.port}{path}"

    def start(self, *, timeout_s: float = 30.0) -> None:
        config = uvicorn.Config(
            _RecordRequests(_LoggedInBrowser(self.app, lambda: self.browser_cookie), self.requests),
            host=LOOPBACK, port=self.port, log_level="warning",
            lifespan="off",
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="app-server", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"uvicorn did not start on {LOOPBACK}:{self.port}")
            time.sleep(0.05)

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(15)

    def __enter__(self) -> AppServer:
        self.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()


@dataclass
class Chromium:
    """One headless Chromium run per call, each with a fresh profile folder (removed afterwards)."""

    window_size: tuple[int, int] = WINDOW_SIZE
    timeout_s: float = 90.0
    #: Milliseconds of virtual time the page gets to settle (images, styles) before the capture.
    virtual_time_budget_ms: int = 5000

    def _run(self, *args: str) -> subprocess.CompletedProcess:
        profile = Path(tempfile.mkdtemp(prefix="myomap-chromium-"))
        width, height = self.window_size
        command = [
            str(CHROMIUM), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}",
            f"--virtual-time-budget={self.virtual_time_budget_ms}", *args,
        ]
        try:
            done = subprocess.run(
                command, capture_output=True, text=True, timeout=self.timeout_s, cwd=profile,
                env={**os.environ, "TCP_NODELAY": "1"},
            )
        finally:
            shutil.rmtree(profile, ignore_errors=True)
        if done.returncode != 0:
            raise RuntimeError(f"chromium exited with {done.returncode}: {done.stderr[-2000:]}")
        return done

    def screenshot(self, url: str, out: Path) -> Path:
        """A PNG of the window showing ``url``, written to ``out``."""
        out.parent.mkdir(parents=True, exist_ok=True)
        out.unlink(missing_ok=True)
        done = self._run(f"--screenshot={out}", url)
        if not out.is_file():
            raise RuntimeError(f"chromium wrote no screenshot of {url}: {done.stderr[-2000:]}")
        return out

    def dump_dom(self, url: str) -> str:
        """The DOM of ``url`` after load, as HTML."""
        return self._run("--dump-dom", url).stdout
