#!/usr/bin/env bash
# Make sure the PostgreSQL the tests use is up: start the local cluster when it is down,
# install it from Debian's packages when the machine has none.
set -euo pipefail
host=${COUNTERGUARD_TEST_PG_HOST:-127.0.0.1}
port=${COUNTERGUARD_TEST_PG_PORT:-5432}
ready() { command -v pg_isready >/dev/null && pg_isready -q -h "$host" -p "$port"; }
ready && exit 0
if ! ls /etc/postgresql/*/main >/dev/null 2>&1; then
  echo "ensure-postgres: no PostgreSQL cluster here; installing Debian's postgresql" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
fi
version=$(ls /etc/postgresql | sort -V | tail -n 1)
echo "ensure-postgres: starting PostgreSQL $version" >&2
pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
for _ in $(seq 1 30); do ready && exit 0; sleep 1; done
echo "ensure-postgres: PostgreSQL did not come up on $host:$port" >&2
exit 1
