#!/usr/bin/env bash
# Makes a PostgreSQL server binary available for the multi-worker tests (they start their
# own throw-away server on loopback). Installs Debian's package when none is found.
#
# Never fails: without PostgreSQL (no root, no apt-get, offline mirror, a broken package)
# it prints a warning and exits 0, and the PostgreSQL test skips with its own message.
set -uo pipefail
have_pg() {
  command -v postgres >/dev/null 2>&1 && command -v initdb >/dev/null 2>&1 && return 0
  ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 && return 0
  return 1
}
warn() {
  echo "warning: $*; the PostgreSQL multi-worker test will be skipped" >&2
}
if have_pg; then
  exit 0
fi
if [ "$(id -u)" != "0" ] || ! command -v apt-get >/dev/null 2>&1; then
  warn "PostgreSQL not found and cannot apt-get install it here (needs root and apt-get)"
  exit 0
fi
echo "installing PostgreSQL (apt-get) for the multi-worker tests"
export DEBIAN_FRONTEND=noninteractive
if ! apt-get update -qq >/dev/null 2>&1; then
  warn "'apt-get update' failed (offline?); install PostgreSQL by hand to run that test"
  exit 0
fi
if ! apt-get install -y -qq postgresql >/dev/null 2>&1; then
  warn "'apt-get install postgresql' failed; install PostgreSQL by hand to run that test"
  exit 0
fi
if ! have_pg; then
  warn "apt-get installed postgresql but no postgres/initdb binary was found"
fi
exit 0
