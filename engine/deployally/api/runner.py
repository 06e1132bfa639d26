"""Serving the API app: a request aiohttp refuses before any handler runs is answered in the
error envelope too, and logged as one line.

A malformed request line or header (`Bad Header`, a control character, a NUL in the path)
fails in aiohttp's parser, before the app and its middlewares; aiohttp has no hook for it
(aio-libs/aiohttp#3287), so the connection's own error answer is replaced here.
"""

from __future__ import annotations

import logging

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest
from aiohttp.web_response import StreamResponse

from deployally.api.envelope import ApiError, failure
from deployally.logs import fields

log = logging.getLogger("deployally.api")


class ApiRunner(web.AppRunner):
    """aiohttp's AppRunner, whose connections answer malformed requests in the error envelope."""

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        # The app's own Server, made by aiohttp; only the class of connection it makes changes.
        server.__class__ = _EnvelopeServer
        return server


class _EnvelopeServer(web.Server):
    def __call__(self) -> RequestHandler:
        return _EnvelopeConnection(self, loop=self._loop, **self._kwargs)


class _EnvelopeConnection(RequestHandler):
    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> StreamResponse:
        """A parse error: the envelope and one log line; anything else as aiohttp does it."""
        if not isinstance(exc, HttpProcessingError) or request.writer.output_size > 0:
            return super().handle_error(request, status, exc, message)
        reason = malformed_reason(exc)
        log.warning(
            "refused a malformed HTTP request",
            extra=fields(remote=request.remote, status=status, error=reason),
        )
        code = "bad_request" if status == 400 else "http_error"
        response = failure(ApiError(status, code, f"malformed HTTP request: {reason}"))
        response.force_close()  # the parser cannot go on from here
        return response


def malformed_reason(exc: HttpProcessingError) -> str:
    """What the parser refused, without the bytes it quotes (they may hold a token)."""
    first = (exc.message or "").strip().splitlines()
    reason = first[0].strip().rstrip(":").strip() if first else ""
    return reason[:1].lower() + reason[1:] if reason else "the request line or a header"

