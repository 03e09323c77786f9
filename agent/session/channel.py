"""The local channel between the agent service and the session helpers, and who is at the other end.

Frames are ``multiprocessing.connection`` frames (``send_bytes``/``recv_bytes``; never ``send``/``recv``,
which unpickle). Where the channel lives:

- Linux: an ``AF_UNIX`` stream socket, ``<run_dir>/session.sock`` (``/run/counterguard-agent/session.sock``
  by default). The folder is ``0755`` and the socket ``0666``, so every local account can connect; the
  service learns the peer's uid and pid from the kernel (``SO_PEERCRED``), never from the peer.
- Windows: the named pipe ``\\\\.\\pipe\\counterguard-agent``, with the access rules in ``_pipe_windows``;
  the peer's session id comes from ``GetNamedPipeClientSessionId`` and its account from its process.

:func:`listen` is the service's end, :func:`connect` the helper's.
"""

from __future__ import annotations

import os
import select
import socket
import stat
import struct
import sys
from multiprocessing.connection import Client, Connection
from pathlib import Path
from typing import NamedTuple, Protocol

from agent.errors import AgentError

PIPE_ADDRESS = r"\\.\pipe\counterguard-agent"
SOCKET_NAME = "session.sock"
_UCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid


class ChannelError(AgentError):
    """The channel cannot be opened or listened on; the text says where and why."""


class Peer(NamedTuple):
    """Who is at the other end, as the operating system says (empty where it cannot tell)."""

    pid: int
    user: str
    session: str


class Endpoint(Protocol):
    """A connection as both ends use it (``multiprocessing.connection.Connection`` or ``PipeConnection``)."""

    def send_bytes(self, buf: bytes) -> None: ...
    def recv_bytes(self, maxlength: int | None = None) -> bytes: ...
    def poll(self, timeout: float | None = 0.0) -> bool: ...
    def close(self) -> None: ...


class Listener(Protocol):
    """The service's end: accepts helpers one at a time."""

    address: str

    def accept(self, timeout: float) -> tuple[Endpoint, Peer] | None: ...
    def close(self) -> None: ...


def default_address(run_dir: Path) -> str:
    """Where the service listens on this platform."""
    return PIPE_ADDRESS if sys.platform == "win32" else str(run_dir / SOCKET_NAME)


def listen(address: str) -> Listener:
    """Listen on ``address`` (a socket path, or a pipe name on Windows)."""
    if sys.platform == "win32":
        from agent.session._pipe_windows import PipeListener

        return PipeListener(address)
    return UnixListener(Path(address))


def connect(address: str, timeout: float = 2.0) -> Endpoint:
    """Connect to the service at ``address``; :class:`ChannelError` when nobody listens there."""
    if sys.platform == "win32":
        from agent.session._pipe_windows import connect_pipe

        return connect_pipe(address, timeout)
    try:
        return Client(address, family="AF_UNIX")
    except OSError as exc:
        raise ChannelError(f"{address}: cannot connect to the agent ({exc.strerror or exc})") from None


def unix_peer(sock: socket.socket) -> Peer:
    """The pid and account of the process at the other end of a Unix socket (``SO_PEERCRED``)."""
    import pwd  # Unix only

    pid, uid, _gid = _UCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size))
    try:
        user = pwd.getpwuid(uid).pw_name
    except KeyError:
        user = str(uid)
    return Peer(pid, user, "")


class UnixListener:
    """A Unix socket every local account may connect to, in a folder only root writes."""

    def __init__(self, path: Path) -> None:
        self.address = str(path)
        self._path = path
        _clear_stale(path)
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self._sock.bind(str(path))
            os.chmod(path, 0o666)
            self._sock.listen(16)
        except OSError as exc:
            self._sock.close()
            raise ChannelError(f"{path}: cannot listen for session helpers ({exc.strerror or exc})") from None
        self._inode = os.stat(path).st_ino

    def accept(self, timeout: float) -> tuple[Endpoint, Peer] | None:
        """The next helper and who it is; ``None`` when none came within ``timeout`` seconds."""
        ready, _, _ = select.select([self._sock], [], [], timeout)
        if not ready:
            return None
        try:
            sock, _ = self._sock.accept()
        except OSError:
            return None
        try:
            peer = unix_peer(sock)
        except OSError:
            sock.close()
            return None
        sock.setblocking(True)
        return Connection(sock.detach()), peer

    def close(self) -> None:
        """Remove the socket (unless another process has put its own there since), then stop listening:
        in that order a helper connecting meanwhile finds no socket, rather than one nobody answers."""
        try:
            if os.stat(self._path).st_ino == self._inode:
                self._path.unlink()
        except OSError:
            pass
        self._sock.close()


def _clear_stale(path: Path) -> None:
    """Make ``path``'s folder (``0755``) and remove a socket left by an agent that is gone.

    A socket someone still answers on means another agent runs: :class:`ChannelError`.
    """
    try:
        path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    except OSError as exc:
        raise ChannelError(f"{path.parent}: cannot create the agent's run folder ({exc.strerror or exc})") from None
    if not stat.S_ISSOCK(mode):
        raise ChannelError(f"{path} exists and is not a socket; remove it")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(path))
    except OSError:
        path.unlink(missing_ok=True)
        return
    finally:
        probe.close()
    raise ChannelError(f"{path}: another agent is already listening there")
