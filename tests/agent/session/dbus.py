"""A private session bus and a notification server on it that records every ``Notify`` call, as real processes.

:func:`private_bus` starts ``dbus-daemon --session`` on a socket in a test's directory.
:func:`start_notification_server` starts this file as a program: it owns ``org.freedesktop.Notifications``
on that bus, answers ``Notify`` with an id, and appends each call to a JSON-lines file
(``app_name, replaces_id, icon, summary, body, actions, hints, expire_timeout``); with ``--refuse`` it
answers every call with a D-Bus error instead.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

NAME = "org.freedesktop.Notifications"


@contextmanager
def private_bus(directory: Path) -> Iterator[str]:
    """A dbus-daemon of our own; yields its address."""
    if shutil.which("dbus-daemon") is None:
        raise AssertionError("dbus-daemon missing (run scripts/ensure-test-tools.sh as root)")
    socket_path = directory / "session-bus"
    daemon = subprocess.Popen(["dbus-daemon", "--session", "--nofork", "--nopidfile",
                               f"--address=unix:path={socket_path}"], stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while not socket_path.exists():
            assert daemon.poll() is None and time.monotonic() < deadline, "dbus-daemon did not start"
            time.sleep(0.05)
        yield f"unix:path={socket_path}"
    finally:
        daemon.terminate()
        daemon.wait(timeout=10)


@contextmanager
def notification_server(address: str, record: Path, *, refuse: bool = False) -> Iterator[Path]:
    """This file as a notification server on ``address``, recording into ``record``; yields ``record``."""
    command = [sys.executable, __file__, address, str(record), *(["--refuse"] if refuse else [])]
    server = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None and server.stdout.readline().strip() == "ready", "the server did not start"
        yield record
    finally:
        server.terminate()
        server.wait(timeout=10)


def calls(record: Path) -> list[dict[str, Any]]:
    """The ``Notify`` calls recorded so far."""
    if not record.exists():
        return []
    return [json.loads(line) for line in record.read_text(encoding="utf-8").splitlines() if line]


def _serve(address: str, record: Path, refuse: bool) -> None:
    from jeepney import HeaderFields, MessageType, new_error, new_method_return
    from jeepney.bus_messages import message_bus
    from jeepney.io.blocking import open_dbus_connection

    with open_dbus_connection(address) as conn:
        conn.send_and_get_reply(message_bus.RequestName(NAME))
        print("ready", flush=True)
        served = 0
        while True:
            message = conn.receive()
            if message.header.message_type != MessageType.method_call:
                continue
            member = message.header.fields.get(HeaderFields.member)
            if refuse or member != "Notify":
                conn.send(new_error(message, "org.freedesktop.DBus.Error.AccessDenied", "s", ("not today",)))
                continue
            served += 1
            names = ("app_name", "replaces_id", "icon", "summary", "body", "actions", "hints", "expire_timeout")
            body = dict(zip(names, message.body))
            body["hints"] = {key: value[1] for key, value in body["hints"].items()}
            with record.open("a", encoding="utf-8") as out:
                out.write(json.dumps(body, ensure_ascii=False) + "\n")
            conn.send(new_method_return(message, "u", (served,)))


if __name__ == "__main__":
    _serve(sys.argv[1], Path(sys.argv[2]), "--refuse" in sys.argv[3:])
