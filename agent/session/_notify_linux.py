"""Linux notices: ``org.freedesktop.Notifications.Notify`` on the session bus, with jeepney (pure Python).

Every desktop of the counter PCs (GNOME, KDE, Xfce, DDE on UOS, UKUI on Kylin) runs a server of the
freedesktop Desktop Notifications specification on the session bus. Each notice opens the bus named
by ``DBUS_SESSION_BUS_ADDRESS``, calls ``Notify`` and closes it again: a few notices a minute at most,
and a desktop restarting in between costs nothing.
"""

from __future__ import annotations

from jeepney import DBusAddress, new_method_call
from jeepney.auth import AuthenticationError
from jeepney.io.blocking import open_dbus_connection
from jeepney.wrappers import DBusErrorResponse, unwrap_msg

from agent.session.notifiers import APP_NAME, NotifierError

NOTIFICATIONS = DBusAddress("/org/freedesktop/Notifications", bus_name="org.freedesktop.Notifications",
                            interface="org.freedesktop.Notifications")
NOTIFY_SIGNATURE = "susssasa{sv}i"
URGENCY_NORMAL = 1
EXPIRE_DEFAULT = -1  # the server decides how long the notice stays
ICON = "dialog-warning"
_TIMEOUT = 5.0


def notify_arguments(title: str, body: str) -> tuple[object, ...]:
    """``Notify``'s arguments: app name, replaces id, icon, summary, body, actions, hints, expiry."""
    return (APP_NAME, 0, ICON, title, body, [], {"urgency": ("y", URGENCY_NORMAL)}, EXPIRE_DEFAULT)


class FreedesktopNotifier:
    """Shows notices through the notification server of the session bus (``bus`` for tests: an address)."""

    def __init__(self, bus: str = "SESSION") -> None:
        self._bus = bus

    def show(self, title: str, body: str) -> None:
        call = new_method_call(NOTIFICATIONS, "Notify", NOTIFY_SIGNATURE, notify_arguments(title, body))
        try:
            with open_dbus_connection(self._bus) as conn:
                unwrap_msg(conn.send_and_get_reply(call, timeout=_TIMEOUT))
        except KeyError:
            raise NotifierError("no session bus (DBUS_SESSION_BUS_ADDRESS is not set)") from None
        except DBusErrorResponse as exc:
            raise NotifierError(f"the notification service refused: {exc.name}: {' '.join(map(str, exc.data))}") \
                from None
        except (OSError, TimeoutError, AuthenticationError, ValueError) as exc:
            raise NotifierError(f"the session bus did not answer ({exc or type(exc).__name__})") from None
