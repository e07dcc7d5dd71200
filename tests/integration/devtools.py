"""A headless Chromium driven over the DevTools protocol through a pipe, for tests that click and type.

:class:`tests.integration.browser.Chromium` runs one page per process; a login, a button and a logout need one
browser that keeps its cookies. ``--remote-debugging-pipe`` makes Chromium read DevTools commands from file
descriptor 3 and write answers and events to 4, each message JSON ending with a NUL byte, so no WebSocket client
is needed. Expressions run through ``Runtime.evaluate``, which the page's Content-Security-Policy does not govern
(so a test can click the page's own buttons), while the page's own scripts and styles stay under the policy;
:attr:`DevToolsBrowser.console` collects what the page logs, CSP violations included.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from tests.integration.browser import CHROMIUM, CHROMIUM_FLAGS, WINDOW_SIZE

#: The pipe's ends in Chromium (fixed by ``--remote-debugging-pipe``).
COMMANDS_FD = 3
EVENTS_FD = 4


class DevToolsBrowser:
    """One headless Chromium with one page; ``with DevToolsBrowser() as browser: browser.goto(url)``."""

    def __init__(self, timeout_s: float = 30.0) -> None:
        self.timeout_s = timeout_s
        self.console: list[str] = []
        self._next_id = 0
        self._messages: queue.Queue[dict[str, Any]] = queue.Queue()
        self._events: list[dict[str, Any]] = []
        self._profile = Path(tempfile.mkdtemp(prefix="myomap-devtools-"))
        commands_read, self._commands = os.pipe()
        self._events_fd, events_write = os.pipe()

        def wire_pipes() -> None:  # in the child, before exec
            os.dup2(commands_read, COMMANDS_FD)
            os.dup2(events_write, EVENTS_FD)

        width, height = WINDOW_SIZE
        self._process = subprocess.Popen(
            [str(CHROMIUM), *CHROMIUM_FLAGS, "--remote-debugging-pipe", f"--user-data-dir={self._profile}",
             f"--window-size={width},{height}", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            close_fds=False, preexec_fn=wire_pipes, cwd=self._profile,
        )
        os.close(commands_read)
        os.close(events_write)
        self._reader = threading.Thread(target=self._read, name="devtools-reader", daemon=True)
        self._reader.start()
        target = self._call("Target.createTarget", {"url": "about:blank"})["targetId"]
        self._session = self._call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            self.call(f"{domain}.enable")

    def _read(self) -> None:
        buffer = b""
        while chunk := os.read(self._events_fd, 65536):
            buffer += chunk
            *complete, buffer = buffer.split(b"\0")
            for raw in complete:
                self._messages.put(json.loads(raw))

    def _send(self, method: str, params: dict[str, Any] | None, session: str | None) -> int:
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session is not None:
            message["sessionId"] = session
        os.write(self._commands, json.dumps(message).encode() + b"\0")
        return self._next_id

    def _take(self, deadline: float) -> dict[str, Any]:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("no answer from Chromium")
        try:
            message = self._messages.get(timeout=remaining)
        except queue.Empty:
            raise TimeoutError("no answer from Chromium") from None
        if "method" in message:
            self._note(message)
        return message

    def _note(self, event: dict[str, Any]) -> None:
        self._events.append(event)
        params = event.get("params", {})
        if event["method"] == "Log.entryAdded":
            self.console.append(params["entry"].get("text", ""))
        elif event["method"] == "Runtime.consoleAPICalled":
            self.console.append(" ".join(str(arg.get("value", "")) for arg in params.get("args", [])))

    def _call(self, method: str, params: dict[str, Any] | None = None, session: str | None = None) -> dict[str, Any]:
        wanted = self._send(method, params, session)
        deadline = time.monotonic() + self.timeout_s
        while True:
            message = self._take(deadline)
            if message.get("id") == wanted:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})

    def call(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """A DevTools command to the page; its result."""
        return self._call(method, params, self._session)

    def wait_for_load(self) -> None:
        """Until the page's next load event (after a navigation, a link or a form's submit)."""
        deadline = time.monotonic() + self.timeout_s
        while True:
            for index, event in enumerate(self._events):
                if event["method"] == "Page.loadEventFired":
                    del self._events[: index + 1]
                    return
            self._events.clear()
            self._take(deadline)

    def goto(self, url: str) -> None:
        self._events.clear()
        self.call("Page.navigate", {"url": url})
        self.wait_for_load()

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page."""
        result = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True})
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def submit(self, expression: str) -> None:
        """Run ``expression`` (a click or a form's submit) and wait for the page it leads to."""
        self._events.clear()
        self.evaluate(expression)
        self.wait_for_load()

    def settle(self, seconds: float) -> None:
        """Let the page run for a while (scripts of its own, navigations), collecting its events."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                self._take(deadline)
            except TimeoutError:
                return

    def close(self) -> None:
        try:
            self._send("Browser.close", None, None)
            self._process.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            self._process.kill()
            self._process.wait(timeout=10)
        finally:
            os.close(self._commands)
            self._reader.join(timeout=10)  # Chromium gone: its end of the pipe is closed, the reader sees EOF
            if not self._reader.is_alive():
                os.close(self._events_fd)
            shutil.rmtree(self._profile, ignore_errors=True)

    def __enter__(self) -> DevToolsBrowser:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()
