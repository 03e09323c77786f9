#!/usr/bin/env bash
# Make sure the tools the agent's desktop-probe tests drive are installed (Debian packages), installing
# only those that are missing; does nothing when all are there. The tests start these themselves:
#   xvfb, xauth     a real X server with a cookie (foreground window and input idle over X11)
#   x11-utils       xmessage (a real client window with a title) and xprop
#   xdotool         focuses and activates windows, moves the mouse (resets the X11 idle counter)
#   libxss1         the MIT-SCREEN-SAVER client library the idle probe loads with ctypes
#   openbox         a small EWMH window manager, so _NET_ACTIVE_WINDOW is real
#   dbus-daemon     a private bus for the logind idle probe's D-Bus test
set -euo pipefail
packages=(xvfb xauth x11-utils xdotool libxss1 openbox dbus-daemon)
missing=()
for package in "${packages[@]}"; do
  status=$(dpkg-query -W -f='${db:Status-Status}' "$package" 2>/dev/null || true)
  [ "$status" = installed ] || missing+=("$package")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
  echo "ensure-test-tools: missing ${missing[*]}; run as root (or: sudo apt-get install ${missing[*]})" >&2
  exit 1
fi
echo "ensure-test-tools: installing Debian's ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null 2>&1 \
  || { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; }
