"""The Windows end of the channel, as far as it runs here: who may open the pipe, and who opened it."""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from typing import Any

import psutil

from agent.session._pipe_windows import (
    CLIENT_ACCESS,
    FILE_CREATE_PIPE_INSTANCE,
    FILE_READ_DATA,
    FILE_WRITE_ATTRIBUTES,
    FILE_WRITE_DATA,
    PIPE_SDDL,
    pipe_peer,
)


@dataclass
class FakeKernel32:
    """``GetNamedPipeClientProcessId`` / ``GetNamedPipeClientSessionId`` writing through their pointer argument."""

    pid: int | None
    session: int | None
    asked: list[int] | None = None

    def _answer(self, pipe: int, out: Any, value: int | None) -> int:
        (self.asked if self.asked is not None else []).append(pipe)
        if value is None:
            return 0
        ctypes.cast(out, ctypes.POINTER(ctypes.c_ulong))[0] = value
        return 1

    def GetNamedPipeClientProcessId(self, pipe: int, pid: Any) -> int:
        return self._answer(pipe, pid, self.pid)

    def GetNamedPipeClientSessionId(self, pipe: int, session: Any) -> int:
        return self._answer(pipe, session, self.session)


def test_users_may_read_write_and_set_the_read_mode_but_never_serve_the_pipe_themselves() -> None:
    assert CLIENT_ACCESS & (FILE_READ_DATA | FILE_WRITE_DATA | FILE_WRITE_ATTRIBUTES) == \
        FILE_READ_DATA | FILE_WRITE_DATA | FILE_WRITE_ATTRIBUTES
    assert not CLIENT_ACCESS & FILE_CREATE_PIPE_INSTANCE
    assert PIPE_SDDL == "D:P(A;;GA;;;SY)(A;;GA;;;BA)(A;;0x0012019b;;;IU)"


def test_the_peer_is_the_client_process_its_account_and_its_session() -> None:
    kernel32 = FakeKernel32(pid=4242, session=3, asked=[])

    peer = pipe_peer(77, kernel32, account=lambda pid: {4242: "HALL\\zhang"}[pid])

    assert peer == (4242, "HALL\\zhang", "3")
    assert kernel32.asked == [77, 77]


def test_what_windows_does_not_say_stays_empty() -> None:
    def gone(pid: int) -> str:
        raise psutil.NoSuchProcess(pid)

    assert pipe_peer(77, FakeKernel32(pid=None, session=None), account=gone) == (0, "", "")
    assert pipe_peer(77, FakeKernel32(pid=4242, session=1), account=gone) == (4242, "", "1")
