"""The HTTP server of `python -m cats_model.serve`: uvicorn on a port bound first, with limits on what a client may
hold: a request head sent within a deadline, buffered up to 16 KiB (uvicorn's default httptools parser has no limit);
a keep-alive connection closed when idle.

(On Modal, Modal's own proxy speaks HTTP to the world; the app's body limit and body timeout apply there too.)
"""

import errno
import socket

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from cats_model.errors import UserError
from cats_model.serve.body_limit import MAX_HEAD_BYTES

KEEP_ALIVE_S = 5  # an idle connection between requests is closed after this
SHUTDOWN_S = 10  # on SIGTERM, requests under way get this long to finish


def listening_socket(host: str, port: int) -> socket.socket:
    """A socket bound to `host:port`, or one line on why not, before "serving ... at" is printed."""
    try:
        return socket.create_server((host, port), family=socket.AF_INET6 if ":" in host else socket.AF_INET)
    except OSError as err:
        if err.errno == errno.EADDRINUSE:
            raise UserError(
                f"port {port} on {host} is already in use (another server?): stop it, or choose another with "
                "--port N"
            ) from None
        raise UserError(
            f"cannot listen on {host}:{port} ({err.strerror or err}): check --host and --port"
        ) from None


def with_head_deadline(seconds: float) -> type[H11Protocol]:
    """uvicorn's h11 protocol, closing a connection whose request head has not arrived `seconds` after the
    connection opened or its previous response ended: a client that sends half a request holds nothing long."""

    class HeadDeadline(H11Protocol):
        _deadline = None

        def connection_made(self, transport):
            super().connection_made(transport)
            self._arm()

        def on_response_complete(self):
            super().on_response_complete()
            self._arm()

        def connection_lost(self, exc):
            if self._deadline is not None:
                self._deadline.cancel()
            super().connection_lost(exc)

        def _arm(self):
            if self._deadline is not None:
                self._deadline.cancel()
            self._deadline = self.loop.call_later(seconds, self._late)

        def _late(self):
            if self.conn.their_state is h11.IDLE and not self.transport.is_closing():  # no whole head yet
                self.transport.close()

    return HeadDeadline


def http_server(app, idle_timeout_s: float) -> uvicorn.Server:
    config = uvicorn.Config(
        app,
        http=with_head_deadline(idle_timeout_s),
        h11_max_incomplete_event_size=MAX_HEAD_BYTES,  # a head sent in pieces: h11 stops buffering it (400)
        timeout_keep_alive=KEEP_ALIVE_S,
        timeout_graceful_shutdown=SHUTDOWN_S,  # SIGTERM stops the server even while requests are still open
        log_level="warning",
    )
    return uvicorn.Server(config)
