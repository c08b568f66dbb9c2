#!/usr/bin/env bash
# Installs what this machine lacks for callmesh, idempotently. Each step is skipped when its
# result is already present, so a second run takes seconds and prints nothing but a summary.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
local_dir="$root/.local"
stamps="$local_dir/stamps"
mkdir -p "$stamps" "$local_dir/logs"
quiet="${SETUP_QUIET:-1}"

say() { printf 'setup: %s\n' "$*"; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# --- Debian packages ---------------------------------------------------------------------
# postgresql: the database; sip-tester (sipp), baresip, sipsak, sox, espeak-ng: SIP/audio tools
# for tests; asterisk-*-sounds/moh: default prompts and music on hold (media serves them, never
# committed); kamailio and rtpengine-daemon (userspace only, not the kernel-module metapackage):
# peers that `make bench` runs side by side.
# A daemon package must not auto-start on its default port: policy-rc.d answers 101 during install.
apt_packages=(postgresql sip-tester baresip sipsak sox espeak-ng
  asterisk-core-sounds-en-wav asterisk-core-sounds-ru-wav asterisk-moh-opsound-wav
  kamailio rtpengine-daemon)
missing=()
for pkg in "${apt_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
  say "installing Debian packages: ${missing[*]}"
  policy=/usr/sbin/policy-rc.d
  had_policy=0; [ -e "$policy" ] && had_policy=1
  if [ "$had_policy" = 0 ]; then printf '#!/bin/sh\nexit 101\n' | as_root tee "$policy" >/dev/null; as_root chmod +x "$policy"; fi
  trap '[ "$had_policy" = 0 ] && as_root rm -f '"$policy" EXIT
  if [ ! -e "$stamps/apt-updated" ] || [ -n "$(find "$stamps/apt-updated" -mmin +1440 2>/dev/null)" ]; then
    as_root apt-get update -qq >"$local_dir/logs/apt-update.log" 2>&1
    touch "$stamps/apt-updated"
  fi
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "${missing[@]}" \
    >"$local_dir/logs/apt-install.log" 2>&1 || { say "apt-get install failed; see .local/logs/apt-install.log"; tail -20 "$local_dir/logs/apt-install.log"; exit 1; }
  if [ "$had_policy" = 0 ]; then as_root rm -f "$policy"; fi
  trap - EXIT
fi

# --- Kafka broker jars from Maven Central ------------------------------------------------
kafka_version="$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$root/scripts/kafka/pom.xml")"
kafka_libs="$local_dir/kafka/libs-$kafka_version"
if [ ! -e "$kafka_libs/.complete" ]; then
  say "fetching Kafka $kafka_version broker jars with Maven into .local/kafka"
  mkdir -p "$kafka_libs"
  mvn -q -B -f "$root/scripts/kafka/pom.xml" dependency:copy-dependencies \
    -DoutputDirectory="$kafka_libs" -DincludeScope=runtime >"$local_dir/logs/maven.log" 2>&1 \
    || { say "Maven failed; see .local/logs/maven.log"; tail -20 "$local_dir/logs/maven.log"; exit 1; }
  touch "$kafka_libs/.complete"
fi

# --- Python environment (uv workspace, one .venv) ----------------------------------------
# A freshly pip-installed uv may not be on PATH yet (pyenv shims need a rehash), so after
# installing it we run it as a module, which always works.
uv=(uv)
if ! command -v uv >/dev/null 2>&1; then
  if ! python3 -m uv --version >/dev/null 2>&1; then
    say "installing uv from PyPI"
    python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore uv
  fi
  uv=(python3 -m uv)
fi
lock_hash="$(cd "$root" && cat $(ls uv.lock pyproject.toml */pyproject.toml */*/pyproject.toml 2>/dev/null || true) | sha256sum | cut -c1-16)"
if [ ! -x "$root/.venv/bin/python" ] || [ "$(cat "$stamps/uv-sync" 2>/dev/null)" != "$lock_hash" ]; then
  say "syncing the Python environment (.venv)"
  # Never let uv download its own Python: only the package registries are reachable.
  (cd "$root" && UV_PYTHON_DOWNLOADS=never "${uv[@]}" sync --all-packages --locked -q) \
    || { say "uv sync failed (is uv.lock out of date? run 'uv lock')"; exit 1; }
  echo "$lock_hash" >"$stamps/uv-sync"
fi
[ "$quiet" = 1 ] || say "nothing to do"
