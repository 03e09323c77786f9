"""The agent's Windows-only parts: the service entry point, install/uninstall, and Windows default paths.

Importing any module here is safe on every platform: pywin32 (``servicemanager``, ``win32service``,
``win32serviceutil``, ``pywintypes``, ``pythoncom``) is imported by name only inside the functions that run on
Windows, so the Linux agent never loads it. Everything that decides or parses is plain Python behind injectable
readers and runners, and is tested on Linux; nothing in this package has run on a real Windows machine.
"""
