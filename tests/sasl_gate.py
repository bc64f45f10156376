"""A SASL/PLAIN gate for tests: a Kafka client must log in before its bytes reach the broker.

The embedded broker's own SASL needs users kept in storage it cannot be given before it
requires them, so the gate stands in front of it, as a SASL listener would: it relays
the client's `ApiVersions` to the broker, answers `SaslHandshake` and `SaslAuthenticate`
itself (PLAIN, versions 0 to 2), and relays the rest only after a good user and
password. Clients run their real SASL exchange; a wrong password ends the connection.

>>> plain_credentials(b"\\x00seg\\x00s3cret")
('seg', 's3cret')
>>> _uvarint(bytes([0x96, 0x01]), 0)
(150, 2)
"""

from __future__ import annotations

import asyncio
import struct

from tests.tls_proxy import TlsProxy

API_VERSIONS, SASL_HANDSHAKE, SASL_AUTHENTICATE = 18, 17, 36
UNSUPPORTED_SASL_MECHANISM, SASL_AUTHENTICATION_FAILED = 33, 58


def plain_credentials(token: bytes) -> tuple[str, str]:
    """User and password of a PLAIN token: `[authzid] NUL user NUL password`."""
    _authorization, user, password = token.split(b"\x00", 2)
    return user.decode(), password.decode()


class SaslPlainGate(TlsProxy):
    """Relay `listen_port` to the broker at `upstream_port` for clients that log in as one
    of `users` (name to password); `logins` and `refusals` count the attempts."""

    def __init__(self, users: dict[str, str], listen_port: int, upstream_port: int) -> None:
        super().__init__(None, listen_port, upstream_port)
        self.users = users
        self.logins = 0
        self.refusals = 0

    async def admit(
        self,
        client_reader: asyncio.StreamReader,
        client_writer: asyncio.StreamWriter,
        upstream_reader: asyncio.StreamReader,
        upstream_writer: asyncio.StreamWriter,
    ) -> bool:
        while True:
            try:
                frame = await _read_frame(client_reader)
            except asyncio.IncompleteReadError:
                return False
            api_key, version, correlation = struct.unpack(">hhi", frame[:8])
            if api_key == API_VERSIONS:
                upstream_writer.write(_framed(frame))
                client_writer.write(_framed(await _read_frame(upstream_reader)))
            elif api_key == SASL_HANDSHAKE:
                mechanism = _string(frame, _body_start(frame, flexible=False))
                error = 0 if mechanism == "PLAIN" else UNSUPPORTED_SASL_MECHANISM
                answer = struct.pack(">ihih", correlation, error, 1, 5) + b"PLAIN"
                client_writer.write(_framed(answer))
                if error:
                    return False
            elif api_key == SASL_AUTHENTICATE:
                token = _auth_bytes(frame, version)
                admitted = self._check(token)
                client_writer.write(_framed(_authenticated(correlation, version, admitted)))
                await client_writer.drain()
                return admitted
            else:
                return False  # nothing but the login before logging in
            await client_writer.drain()

    def _check(self, token: bytes) -> bool:
        try:
            user, password = plain_credentials(token)
        except ValueError:
            user, password = "", None
        if self.users.get(user) == password:
            self.logins += 1
            return True
        self.refusals += 1
        return False


async def _read_frame(reader: asyncio.StreamReader) -> bytes:
    (size,) = struct.unpack(">i", await reader.readexactly(4))
    return await reader.readexactly(size)


def _framed(payload: bytes) -> bytes:
    return struct.pack(">i", len(payload)) + payload


def _uvarint(data: bytes, at: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, at
        shift += 7


def _body_start(frame: bytes, *, flexible: bool) -> int:
    """Offset of the request body: after key, version, correlation id, client id and, in
    flexible versions, the header's tagged fields."""
    (client_id_length,) = struct.unpack(">h", frame[8:10])
    at = 10 + max(client_id_length, 0)
    if flexible:
        tags, at = _uvarint(frame, at)
        for _ in range(tags):
            _tag, at = _uvarint(frame, at)
            size, at = _uvarint(frame, at)
            at += size
    return at


def _string(frame: bytes, at: int) -> str:
    (length,) = struct.unpack(">h", frame[at : at + 2])
    return frame[at + 2 : at + 2 + length].decode()


def _auth_bytes(frame: bytes, version: int) -> bytes:
    at = _body_start(frame, flexible=version >= 2)
    if version >= 2:
        length, at = _uvarint(frame, at)
        return frame[at : at + length - 1]
    (length,) = struct.unpack(">i", frame[at : at + 4])
    return frame[at + 4 : at + 4 + length]


def _authenticated(correlation: int, version: int, admitted: bool) -> bytes:
    error = 0 if admitted else SASL_AUTHENTICATION_FAILED
    message = b"" if admitted else b"wrong user or password"
    if version >= 2:
        text = bytes([0]) if admitted else bytes([len(message) + 1]) + message
        return (
            struct.pack(">ib", correlation, 0)
            + struct.pack(">h", error)
            + text
            + bytes([1])  # empty compact auth bytes
            + struct.pack(">q", 0)
            + bytes([0])
        )
    text = struct.pack(">h", -1) if admitted else struct.pack(">h", len(message)) + message
    answer = struct.pack(">ih", correlation, error) + text + struct.pack(">i", 0)
    if version >= 1:
        answer += struct.pack(">q", 0)
    return answer
