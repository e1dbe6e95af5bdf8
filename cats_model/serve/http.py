"""The HTTP server of `python -m cats_model.serve`: uvicorn on a port bound first, with limits on what a client may
hold: a request head sent within a deadline, buffered up to 16 KiB (uvicorn's default httptools parser has no limit);
a keep-alive connection closed when idle; and an answer that refuses a request reaching a client still sending it.

(On Modal, Modal's own proxy speaks HTTP to the world; the app's body limit and body timeout apply there too.)
"""

import errno
import json
import socket

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from cats_model.errors import UserError
from cats_model.serve.body_limit import MAX_HEAD_BYTES, head_too_large

KEEP_ALIVE_S = 5  # an idle connection between requests is closed after this
SHUTDOWN_S = 10  # on SIGTERM, requests under way get this long to finish (--shutdown-grace-s)
# After refusing a request it has not read whole, what the client still sends is read and dropped until it has
# been quiet LINGER_S, and never longer than LINGER_MAX_S in all (nginx: 5 s and 30 s).
LINGER_S, LINGER_MAX_S = 2, 30


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


class LingeringClose:
    """The connection's transport, whose close() first lets the answer reach a client that is still sending: a
    socket closed with unread input sends a reset, and the client's system may drop the answer it has not read
    yet (a 413 for a body too large, a 431). So the write side is shut (the answer, then FIN), input is read and
    dropped (`dropped`) until the client closes or stays quiet LINGER_S, then the socket closes: what web servers
    call a lingering close."""

    def __init__(self, transport, protocol: "GuardedH11"):
        self._transport, self._protocol, self.lingering = transport, protocol, False
        self._timer = self._until = None

    def __getattr__(self, name):
        return getattr(self._transport, name)

    def close(self) -> None:
        if self.lingering or self._transport.is_closing():
            return
        # Answered before the request was read whole: the client may still be sending it.
        still_sending = self._protocol.conn.their_state in (h11.SEND_BODY, h11.ERROR)
        if not (still_sending and self._transport.can_write_eof()):
            return self._transport.close()
        self.lingering, self._until = True, self._protocol.loop.time() + LINGER_MAX_S
        self._transport.write_eof()
        self._protocol.flow.resume_reading()  # reading may have been paused by uvicorn's flow control
        self.dropped()

    def dropped(self) -> None:
        """Input arrived while lingering: the client is still sending, wait for it a while longer."""
        if self._timer is not None:
            self._timer.cancel()
        wait = min(LINGER_S, self._until - self._protocol.loop.time())
        self._timer = self._protocol.loop.call_later(max(0, wait), self._transport.close)

    def is_closing(self) -> bool:
        return self.lingering or self._transport.is_closing()

    def closed(self) -> None:
        if self._timer is not None:
            self._timer.cancel()


class GuardedH11(H11Protocol):
    """uvicorn's h11 protocol, with a deadline for each request head (`head_deadline_s`, set by guarded_h11), a
    431 for a head over MAX_HEAD_BYTES however it arrives, and a lingering close."""

    head_deadline_s: float
    _deadline = None

    def connection_made(self, transport):
        super().connection_made(transport)
        self.transport = LingeringClose(transport, self)
        self._arm()

    def data_received(self, data: bytes) -> None:
        if self.transport.lingering:
            self.transport.dropped()
        else:
            super().data_received(data)

    def on_response_complete(self):
        super().on_response_complete()
        self._arm()

    def connection_lost(self, exc):
        if self._deadline is not None:
            self._deadline.cancel()
        self.transport.closed()
        super().connection_lost(exc)

    def send_400_response(self, msg: str) -> None:
        """h11 stops buffering a head over its limit that arrives in pieces (one that arrives whole reaches the
        app's BodyLimit): the same 431 as the app's, not uvicorn's 400."""
        if len(self.conn.trailing_data[0]) <= MAX_HEAD_BYTES:
            return super().send_400_response(msg)
        body = json.dumps({"error": head_too_large(MAX_HEAD_BYTES)}).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ]
        for event in (
            h11.Response(status_code=431, headers=headers),
            h11.Data(data=body),
            h11.EndOfMessage(),
        ):
            self.transport.write(self.conn.send(event))
        self.transport.close()

    def _arm(self):
        """A client has `head_deadline_s` from the connection's start or its previous response to send a whole
        request head: one that sends half a request holds nothing long."""
        if self._deadline is not None:
            self._deadline.cancel()
        self._deadline = self.loop.call_later(self.head_deadline_s, self._late)

    def _late(self):
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():  # no whole head yet
            self.transport.close()


def guarded_h11(head_deadline_s: float) -> type[H11Protocol]:
    return type("GuardedH11", (GuardedH11,), {"head_deadline_s": head_deadline_s})


def http_server(app, idle_timeout_s: float, shutdown_grace_s: float) -> uvicorn.Server:
    config = uvicorn.Config(
        app,
        http=guarded_h11(idle_timeout_s),
        h11_max_incomplete_event_size=MAX_HEAD_BYTES,  # a head sent in pieces: h11 stops buffering it (431)
        ws="none",  # no websocket routes: an upgrade is refused, never handed the lingering transport
        timeout_keep_alive=KEEP_ALIVE_S,
        timeout_graceful_shutdown=shutdown_grace_s,  # SIGTERM stops the server even with requests still open
        log_level="warning",
    )
    return uvicorn.Server(config)
