"""Windows end of the session channel: the named pipe, who may open it, and who opened it.

``multiprocessing``'s own pipe listener creates the pipe with the default security descriptor, which
for a service running as LocalSystem lets other accounts read but not write: no helper could talk.
:class:`PipeListener` creates every pipe instance with :data:`PIPE_SDDL` instead: full control for
SYSTEM and administrators; for interactive users read, write and attribute access (:data:`CLIENT_ACCESS`)
but not ``FILE_CREATE_PIPE_INSTANCE``, so no user can serve a pipe of the same name while the service
runs, and remote clients are rejected. :func:`connect_pipe` opens it asking for exactly those rights.
The frames are ``multiprocessing.connection.PipeConnection``'s (message mode).

Who connected: :func:`pipe_peer` asks ``GetNamedPipeClientProcessId`` and ``GetNamedPipeClientSessionId``
through an injectable ``kernel32``, and the account from the client process (psutil). Nothing in this
module has run on Windows yet; the access masks and the peer lookup are tested on Linux with a fake.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from typing import Any, Protocol

import psutil

from agent.session.channel import ChannelError, Endpoint, Peer

FILE_READ_DATA, FILE_WRITE_DATA, FILE_CREATE_PIPE_INSTANCE = 0x1, 0x2, 0x4
FILE_READ_EA, FILE_WRITE_EA = 0x8, 0x10
FILE_READ_ATTRIBUTES, FILE_WRITE_ATTRIBUTES = 0x80, 0x100
READ_CONTROL, SYNCHRONIZE = 0x20000, 0x100000
# Read and write the pipe, set its read mode (SetNamedPipeHandleState needs FILE_WRITE_ATTRIBUTES).
CLIENT_ACCESS = (FILE_READ_DATA | FILE_WRITE_DATA | FILE_READ_EA | FILE_WRITE_EA | FILE_READ_ATTRIBUTES
                 | FILE_WRITE_ATTRIBUTES | READ_CONTROL | SYNCHRONIZE)
# P: protected (no inherited entries); SY, BA: full control; IU (interactive users): CLIENT_ACCESS.
PIPE_SDDL = f"D:P(A;;GA;;;SY)(A;;GA;;;BA)(A;;{CLIENT_ACCESS:#010x};;;IU)"
PIPE_REJECT_REMOTE_CLIENTS = 0x8
_SDDL_REVISION_1 = 1
_BUFFER = 64 * 1024


class Kernel32(Protocol):
    """The two ``kernel32`` functions that name a pipe's client (same names and arguments as Win32)."""

    def GetNamedPipeClientProcessId(self, pipe: int, pid: Any) -> int: ...
    def GetNamedPipeClientSessionId(self, pipe: int, session: Any) -> int: ...


def pipe_peer(pipe: int, kernel32: Kernel32,
              account: Callable[[int], str] = lambda pid: psutil.Process(pid).username()) -> Peer:
    """The process, account and session id of the client of ``pipe`` ("" for what Windows does not say)."""
    pid, session = ctypes.c_ulong(0), ctypes.c_ulong(0)
    has_pid = bool(kernel32.GetNamedPipeClientProcessId(pipe, ctypes.byref(pid)))
    has_session = bool(kernel32.GetNamedPipeClientSessionId(pipe, ctypes.byref(session)))
    user = ""
    if has_pid:
        try:
            user = account(pid.value)
        except (psutil.Error, OSError):
            user = ""
    return Peer(pid.value if has_pid else 0, user, str(session.value) if has_session else "")


class SECURITY_ATTRIBUTES(ctypes.Structure):
    _fields_ = [("nLength", ctypes.c_uint32), ("lpSecurityDescriptor", ctypes.c_void_p),
                ("bInheritHandle", ctypes.c_int)]


def _security_attributes() -> SECURITY_ATTRIBUTES:
    """:data:`PIPE_SDDL` as the SECURITY_ATTRIBUTES ``CreateNamedPipe`` takes (kept for the process's life)."""
    advapi32: Any = ctypes.WinDLL("advapi32", use_last_error=True)  # type: ignore[attr-defined]
    descriptor = ctypes.c_void_p()
    if not advapi32.ConvertStringSecurityDescriptorToSecurityDescriptorW(
            ctypes.c_wchar_p(PIPE_SDDL), _SDDL_REVISION_1, ctypes.byref(descriptor), None):
        raise ChannelError(f"cannot build the pipe's security descriptor (error {ctypes.get_last_error()})")
    return SECURITY_ATTRIBUTES(ctypes.sizeof(SECURITY_ATTRIBUTES), descriptor, 0)


class PipeListener:
    """Pipe instances with :data:`PIPE_SDDL`, one waiting for a client at a time (overlapped, so
    :meth:`accept` can give up after a timeout and the service can stop)."""

    def __init__(self, address: str) -> None:
        import _winapi  # type: ignore[import-not-found]

        self.address = address
        self._winapi: Any = _winapi
        self._kernel32: Any = ctypes.WinDLL("kernel32", use_last_error=True)  # type: ignore[attr-defined]
        self._attributes = _security_attributes()
        self._first = True
        self._pending: tuple[int, Any] | None = None

    def _new_instance(self) -> tuple[int, Any]:
        w = self._winapi
        mode = w.PIPE_ACCESS_DUPLEX | w.FILE_FLAG_OVERLAPPED | (w.FILE_FLAG_FIRST_PIPE_INSTANCE if self._first else 0)
        try:
            handle = w.CreateNamedPipe(
                self.address, mode,
                w.PIPE_TYPE_MESSAGE | w.PIPE_READMODE_MESSAGE | w.PIPE_WAIT | PIPE_REJECT_REMOTE_CLIENTS,
                w.PIPE_UNLIMITED_INSTANCES, _BUFFER, _BUFFER, w.NMPWAIT_WAIT_FOREVER,
                ctypes.addressof(self._attributes))
        except OSError as exc:
            raise ChannelError(f"{self.address}: cannot create the pipe ({exc})") from None
        self._first = False
        return handle, w.ConnectNamedPipe(handle, overlapped=True)

    def accept(self, timeout: float) -> tuple[Endpoint, Peer] | None:
        """The next helper and who it is; ``None`` when none came within ``timeout`` seconds."""
        from multiprocessing.connection import PipeConnection  # type: ignore[attr-defined]

        w = self._winapi
        if self._pending is None:
            self._pending = self._new_instance()
        handle, overlapped = self._pending
        if w.WaitForMultipleObjects([overlapped.event], False, int(timeout * 1000)) == w.WAIT_TIMEOUT:
            return None
        self._pending = None
        _, error = overlapped.GetOverlappedResult(True)
        if error:
            w.CloseHandle(handle)
            return None
        return PipeConnection(handle), pipe_peer(handle, self._kernel32)

    def close(self) -> None:
        if self._pending is not None:
            handle, overlapped = self._pending
            self._pending = None
            overlapped.cancel()
            self._winapi.CloseHandle(handle)


def connect_pipe(address: str, timeout: float) -> Endpoint:
    """Open the service's pipe with :data:`CLIENT_ACCESS` only, in message mode."""
    import _winapi
    from multiprocessing.connection import PipeConnection  # type: ignore[attr-defined]

    try:
        _winapi.WaitNamedPipe(address, int(timeout * 1000))
        handle = _winapi.CreateFile(address, CLIENT_ACCESS, 0, _winapi.NULL, _winapi.OPEN_EXISTING,
                                    _winapi.FILE_FLAG_OVERLAPPED, _winapi.NULL)
        _winapi.SetNamedPipeHandleState(handle, _winapi.PIPE_READMODE_MESSAGE, None, None)
    except OSError as exc:
        raise ChannelError(f"{address}: cannot connect to the agent ({exc})") from None
    return PipeConnection(handle)  # type: ignore[no-any-return]

