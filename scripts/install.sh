#!/usr/bin/env bash
# Create .venv and install the provider with every extra and the dev tools.
# System packages: psana2 needs Debian's libkrb5-dev (installed when we are root).
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO"

need_apt=()
for pkg in libkrb5-dev docker-compose chromium chromium-driver; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need_apt+=("$pkg")
done
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "install: apt-get install ${need_apt[*]}"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
  else
    echo "install: please install Debian packages: ${need_apt[*]} (psana2, compose checks)" >&2
  fi
fi

PYTHON=${PYTHON:-python3}
if ! command -v uv >/dev/null 2>&1; then
  "$PYTHON" -m pip install -q uv
fi
UV=$(command -v uv || echo "$PYTHON -m uv")
[ -x .venv/bin/python ] || $UV venv -q -p "$PYTHON" .venv
$UV pip install -q -p .venv/bin/python -e ".[all,dev]"
touch .venv/.installed
echo "install: .venv ready ($(.venv/bin/python --version))"
