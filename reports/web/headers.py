"""Security headers on every response of the web app, and HEAD answered wherever GET is.

The pages use no inline script or style (``static/`` holds them), so the Content-Security-Policy allows only this
site's own files: an injected ``<script>`` or ``style=`` does nothing, and no other site may frame the page
(clickjacking). The API description (``/docs``, ``/redoc``) is FastAPI's page, which loads its script and styles
from a CDN and starts them with an inline script; it gets a policy that allows exactly that and shows no data.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

PAGE_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; object-src 'none'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
API_DOCS_POLICY = (
    "default-src 'self'; script-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; "
    "style-src 'self' https://cdn.jsdelivr.net; img-src 'self' data: https://fastapi.tiangolo.com; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
API_DOCS_PATHS = frozenset({"/docs", "/redoc", "/docs/oauth2-redirect"})
COMMON_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    # The page's own forms keep their Referer (the CSRF check may read it); other sites get none.
    (b"referrer-policy", b"same-origin"),
    (b"cross-origin-opener-policy", b"same-origin"),
)


class SecurityHeadersMiddleware:
    """ASGI middleware: adds the headers above to every HTTP response (errors and redirects included), keeping a
    header a route set itself."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        policy = API_DOCS_POLICY if scope["path"] in API_DOCS_PATHS else PAGE_POLICY
        added = (*COMMON_HEADERS, (b"content-security-policy", policy.encode("ascii")))

        started = False

        async def send_with_headers(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                headers.extend((name, value) for name, value in added if name not in present)
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        except Exception:
            # Starlette's error handler answers 500 outside every middleware, without these headers: answer here,
            # then let the error go on to be logged (the handler sees a started response and sends nothing more).
            if not started:
                body = b'{"detail":"internal error: see the node\'s log"}'
                await send_with_headers({"type": "http.response.start", "status": 500, "headers": [
                    (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
                await send_with_headers({"type": "http.response.body",
                                         "body": b"" if scope["method"] == "HEAD" else body})
            raise


class HeadAsGetMiddleware:
    """ASGI middleware: a HEAD request is routed as the GET of the same path and answered without a body (RFC
    9110: HEAD is GET without the content), so every page and API route answers HEAD as it answers GET."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return

        async def send_without_body(message: Message) -> None:
            if message["type"] == "http.response.body":
                message = {**message, "body": b""}
            await send(message)

        await self.app({**scope, "method": "GET"}, receive, send_without_body)
