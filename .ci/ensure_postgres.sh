#!/usr/bin/env bash
# Makes a PostgreSQL server binary available for the multi-worker tests (they start their
# own throw-away server on loopback). Installs Debian's package when none is found.
set -euo pipefail
have_pg() {
  command -v postgres >/dev/null 2>&1 && command -v initdb >/dev/null 2>&1 && return 0
  ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 && return 0
  return 1
}
if have_pg; then
  exit 0
fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing PostgreSQL (apt-get) for the multi-worker tests"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq postgresql >/dev/null
else
  echo "PostgreSQL not found and cannot apt-get install it here; its tests will be skipped" >&2
fi
