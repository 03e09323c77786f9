"""Windows notices: a toast shown by the Windows Runtime's ``ToastNotificationManager``, through PowerShell.

Windows PowerShell 5.1 ships with every Windows 10 and 11 and can load the WinRT notification
classes, so no library and no COM code is needed here: the helper runs one short, hidden
``powershell.exe`` per notice (a few a minute at most) with the script passed ``-EncodedCommand``
(base64 of UTF-16LE), so no quoting of the Chinese text on a command line can go wrong. The toast
XML is built with ElementTree (escaped); the script holds it in a single-quoted here-string, with
newlines flattened so nothing in the text can close it.

A toast needs an application id (AppUserModelID) with a Start-menu shortcut; until the Windows
installer registers CounterGuard's own, :data:`POWERSHELL_APP_ID` (PowerShell's, present on every
system) is used and the toast is labelled "Windows PowerShell". Never yet run on Windows: the XML,
the script and the command line are tested on Linux.
"""

from __future__ import annotations

import base64
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Callable
from typing import Any

from agent.session.notifiers import NotifierError

POWERSHELL_APP_ID = r"{1AC14E77-02E7-4E5D-B744-2EB1AE5198B7}\WindowsPowerShell\v1.0\powershell.exe"
CREATE_NO_WINDOW = 0x08000000
_TIMEOUT = 30.0

_SCRIPT = """$ErrorActionPreference = 'Stop'
[Windows.UI.Notifications.ToastNotificationManager, Windows.UI.Notifications, ContentType = WindowsRuntime] | Out-Null
[Windows.Data.Xml.Dom.XmlDocument, Windows.Data.Xml.Dom.XmlDocument, ContentType = WindowsRuntime] | Out-Null
$xml = New-Object Windows.Data.Xml.Dom.XmlDocument
$xml.LoadXml(@'
{xml}
'@)
$toast = New-Object Windows.UI.Notifications.ToastNotification $xml
[Windows.UI.Notifications.ToastNotificationManager]::CreateToastNotifier('{app_id}').Show($toast)
"""


def _one_line(text: str) -> str:
    return " ".join(text.split())


def toast_xml(title: str, body: str) -> str:
    """The toast's XML: the generic template with the title and the body as its two text lines."""
    toast = ET.Element("toast")
    binding = ET.SubElement(ET.SubElement(toast, "visual"), "binding", template="ToastGeneric")
    ET.SubElement(binding, "text").text = _one_line(title)
    ET.SubElement(binding, "text").text = _one_line(body)
    ET.SubElement(toast, "audio", silent="false")
    return ET.tostring(toast, encoding="unicode")


def powershell_script(title: str, body: str, app_id: str = POWERSHELL_APP_ID) -> str:
    """The PowerShell script that shows the toast under ``app_id``."""
    return _SCRIPT.format(xml=toast_xml(title, body), app_id=app_id.replace("'", "''"))


def powershell_command(title: str, body: str, app_id: str = POWERSHELL_APP_ID) -> list[str]:
    """The command line: a hidden, non-interactive PowerShell without profile, script encoded."""
    encoded = base64.b64encode(powershell_script(title, body, app_id).encode("utf-16-le")).decode("ascii")
    return ["powershell.exe", "-NoProfile", "-NonInteractive", "-ExecutionPolicy", "Bypass",
            "-WindowStyle", "Hidden", "-EncodedCommand", encoded]


class ToastNotifier:
    """Shows notices as toasts; ``run`` is :func:`subprocess.run` unless a test gives another."""

    def __init__(self, app_id: str = POWERSHELL_APP_ID, run: Callable[..., Any] = subprocess.run) -> None:
        self._app_id = app_id
        self._run = run

    def show(self, title: str, body: str) -> None:
        command = powershell_command(title, body, self._app_id)
        flags = CREATE_NO_WINDOW if sys.platform == "win32" else 0
        try:
            result = self._run(command, capture_output=True, timeout=_TIMEOUT, creationflags=flags)
        except (OSError, subprocess.SubprocessError) as exc:
            raise NotifierError(f"cannot run PowerShell to show a toast ({exc})") from None
        if result.returncode != 0:
            error = result.stderr.decode("utf-8", "replace") if isinstance(result.stderr, bytes) else str(result.stderr)
            lines = [line.strip() for line in error.splitlines() if line.strip()]
            raise NotifierError(f"PowerShell could not show the toast (exit {result.returncode}): "
                                f"{lines[0] if lines else 'no message'}")
