#!/usr/bin/env bash
# Build dist/counterguard-agent_<version>_<arch>.deb: the workstation agent alone (packages `agent` and
# `protos`, never `controller`), in a private virtual environment under /opt/counterguard-agent.
#
# Why a private environment: Debian bookworm's python3-grpcio and python3-protobuf are far older than
# the generated code needs. It is built with the target's interpreter (/usr/bin/python3, overridable
# with PYTHON=) so its compiled wheels and byte code match the Python the package depends on.
#
# How it is made relocatable: the environment is created at its final path inside a staging root
# (<tmp>/root/opt/counterguard-agent). Everything that records its own location (pyvenv.cfg, script
# shebangs) then holds "<tmp>/root" + the final path, and stripping that prefix gives the installed
# path exactly; the build fails if any file still names the staging root afterwards. Byte code is
# compiled with the prefix stripped too, and shipped, so dpkg owns it and the read-only /opt of the
# hardened unit costs no start-up time.
#
# Usage: scripts/build-deb.sh            (or: make deb)
# Env:   PYTHON      interpreter the package runs on (default /usr/bin/python3)
#        PIP         pip command used to fill the environment (default: this repo's .venv pip, else $PYTHON -m pip)
#        DIST        output folder (default <repo>/dist)
#        MAINTAINER  the control file's Maintainer field
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PYTHON=${PYTHON:-/usr/bin/python3}
DIST=${DIST:-$REPO/dist}
MAINTAINER=${MAINTAINER:-CounterGuard maintainers <counterguard@localhost>}
PREFIX=/opt/counterguard-agent
PACKAGE=counterguard-agent

fail() { echo "build-deb: $*" >&2; exit 1; }

command -v dpkg-deb >/dev/null || fail "dpkg-deb is missing (apt-get install dpkg-dev)"
[ -x "$PYTHON" ] || fail "$PYTHON not found: the package runs on the system's python3 (apt-get install python3)"
if [ -z "${PIP:-}" ]; then
    if [ -x "$REPO/.venv/bin/python" ]; then PIP="$REPO/.venv/bin/python -m pip"; else PIP="$PYTHON -m pip"; fi
fi
$PIP --version >/dev/null 2>&1 || fail "no pip ($PIP); set PIP= or apt-get install python3-pip"

VERSION=$(sed -n 's/^__version__ = "\(.*\)"$/\1/p' "$REPO/agent/__init__.py")
[ -n "$VERSION" ] || fail "no __version__ in agent/__init__.py"
ARCH=$(dpkg --print-architecture)
PYVER=$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
PYNEXT=$("$PYTHON" -c 'import sys; print("%d.%d" % (sys.version_info[0], sys.version_info[1] + 1))')

WORK=$(mktemp -d "${TMPDIR:-/tmp}/counterguard-deb.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
STAGE=$WORK/root
VENV=$STAGE$PREFIX
SITE=$VENV/lib/python$PYVER/site-packages

# ---------------------------------------------------------------- the agent's dependencies
# Names from packaging/agent-dependencies.txt, version ranges from pyproject.toml.
"$PYTHON" - "$REPO/packaging/agent-dependencies.txt" "$REPO/pyproject.toml" > "$WORK/requirements.txt" <<'PY'
import re, sys, tomllib
names = [line.strip() for line in open(sys.argv[1], encoding="utf-8") if line.strip() and not line.startswith("#")]
with open(sys.argv[2], "rb") as f:
    dependencies = tomllib.load(f)["project"]["dependencies"]
declared = {re.split(r"[\s\[<>=!~;]", d, maxsplit=1)[0].lower(): d for d in dependencies}
missing = [n for n in names if n.lower() not in declared]
if missing:
    sys.exit(f"build-deb: {', '.join(missing)} listed in packaging/agent-dependencies.txt but not in pyproject.toml")
print("\n".join(declared[n.lower()] for n in names))
PY

echo "build-deb: $PACKAGE $VERSION ($ARCH) for Python $PYVER: $(tr '\n' ' ' < "$WORK/requirements.txt")"
"$PYTHON" -m venv --without-pip "$VENV"
$PIP --python "$VENV/bin/python" install --quiet --quiet --no-compile --only-binary=:all: \
    --disable-pip-version-check --no-warn-script-location -r "$WORK/requirements.txt"

# ---------------------------------------------------------------- the agent itself (no controller)
for package in agent protos; do
    (cd "$REPO" && find "$package" -name __pycache__ -prune -o \( -name '*.py' -o -name py.typed \) -print) |
        while read -r file; do install -D -m 0644 "$REPO/$file" "$SITE/$file"; done
done
rm -f "$SITE/protos/generate.py"  # the code generator is a development tool (it needs grpcio-tools)
[ ! -e "$SITE/controller" ] || fail "controller code ended up in the package"

cat > "$VENV/bin/$PACKAGE" <<PY
#!$PREFIX/bin/python3 -I
"""The CounterGuard workstation agent (isolated mode: no PYTHONPATH, no user site-packages, no cwd)."""
import sys

from agent.cli import main

sys.exit(main())
PY
chmod 0755 "$VENV/bin/$PACKAGE"
install -d "$STAGE/usr/bin"
ln -s "$PREFIX/bin/$PACKAGE" "$STAGE/usr/bin/$PACKAGE"

# ---------------------------------------------------------------- relocate: staging root → /
rm -f "$VENV"/bin/activate* "$VENV"/bin/Activate.ps1
grep -rlI --null -F "$STAGE" "$VENV" | xargs -0 -r sed -i "s|$STAGE||g"
"$VENV/bin/python" -m compileall -q -j 0 --invalidation-mode checked-hash -s "$STAGE" -p / "$VENV/lib" >/dev/null
if grep -rl -F "$STAGE" "$STAGE" >/dev/null; then
    fail "files still name the staging root: $(grep -rl -F "$STAGE" "$STAGE" | head -5 | tr '\n' ' ')"
fi

# ---------------------------------------------------------------- unit, configuration, docs
install -D -m 0644 "$REPO/packaging/systemd/$PACKAGE.service" "$STAGE/lib/systemd/system/$PACKAGE.service"
install -D -m 0644 "$REPO/packaging/agent.toml" "$STAGE/etc/counterguard/agent.toml"
# The session helper starts in every graphical session (notices; see agent/session/__init__.py).
install -D -m 0644 "$REPO/packaging/xdg/$PACKAGE-session.desktop" "$STAGE/etc/xdg/autostart/$PACKAGE-session.desktop"
install -d "$STAGE/usr/share/doc/$PACKAGE"
cat > "$STAGE/usr/share/doc/$PACKAGE/copyright" <<TXT
CounterGuard workstation agent, licensed under the Apache License 2.0 (/usr/share/common-licenses/Apache-2.0).
The Python libraries under $PREFIX/lib keep the licences in their own *.dist-info folders.
TXT

# ---------------------------------------------------------------- control
# The lowest glibc the bundled wheels were built for (manylinux_2_X tags): the package's libc6 floor.
GLIBC=$(cat "$SITE"/*.dist-info/WHEEL | sed -n 's/^Tag: .*manylinux_\([0-9]*\)_\([0-9]*\)_.*/\1.\2/p' |
        sort -t. -k1,1n -k2,2n | tail -1)
DEPENDS="python3 (>= $PYVER), python3 (<< $PYNEXT)${GLIBC:+, libc6 (>= $GLIBC)}"
install -d -m 0755 "$STAGE/DEBIAN"
cat > "$STAGE/DEBIAN/control" <<CTL
Package: $PACKAGE
Version: $VERSION
Architecture: $ARCH
Maintainer: $MAINTAINER
Installed-Size: $(du -sk --exclude=DEBIAN "$STAGE" | cut -f1)
Depends: $DEPENDS
Section: admin
Priority: optional
Description: CounterGuard workstation agent
 Observes a service-hall counter PC (hardware and software inventory, programs,
 sessions, power, removable storage) and reports the facts to a CounterGuard
 controller over mutual TLS, through a local outbox that survives outages.
 .
 Runs from a private Python environment in $PREFIX. Enrol with
 "counterguard-agent enroll", then "systemctl start counterguard-agent".
CTL
printf '%s\n' /etc/counterguard/agent.toml "/etc/xdg/autostart/$PACKAGE-session.desktop" > "$STAGE/DEBIAN/conffiles"
for script in postinst prerm postrm; do
    install -m 0755 "$REPO/packaging/debian/$script" "$STAGE/DEBIAN/$script"
done

mkdir -p "$DIST"
OUT="$DIST/${PACKAGE}_${VERSION}_${ARCH}.deb"
dpkg-deb --build --root-owner-group -Zxz "$STAGE" "$OUT" >/dev/null
echo "build-deb: $OUT ($(du -h "$OUT" | cut -f1))"
