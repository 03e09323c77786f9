"""The per-session helper and the service's side of it: the desktop a Windows service cannot see, and notices.

A Windows service runs in session 0: it sees neither the person's input nor their windows, and it
cannot show them anything. A small helper runs in each person's session instead, started at logon:

    counterguard-agent [--config FILE] [--state-dir DIR] session-helper

- Linux: ``/etc/xdg/autostart/counterguard-agent-session.desktop`` (shipped in the .deb) starts it in
  every graphical session (``Exec=/usr/bin/counterguard-agent session-helper``).
- Windows: the service's installer starts it at every logon (the per-machine ``Run`` value
  ``CounterGuardSessionHelper``, under ``pythonw.exe`` so no console window opens); it needs no rights
  beyond the user's own.

The channel (:mod:`agent.session.channel`): on Linux the Unix socket ``<run_dir>/session.sock``
(``run_dir`` setting, default ``/run/counterguard-agent``: the systemd unit's ``RuntimeDirectory``); on
Windows the named pipe ``\\\\.\\pipe\\counterguard-agent``. The service listens (:class:`SessionHub`
in :mod:`agent.session.hub`, started and stopped by :class:`agent.service.AgentService`); helpers
connect, and reconnect when the service restarts. Messages: :mod:`agent.session.protocol`.

What goes over it: the helper samples input idleness and the foreground window (matched locally
against the policy's title patterns) when the service asks, and the service reads them through
:mod:`agent.session.probes` where its own probes see nothing (``desktop_probes`` setting); the
service sends the helpers the controller's notices, which they show with the desktop's notification
service (:mod:`agent.session.notifiers`).
"""
