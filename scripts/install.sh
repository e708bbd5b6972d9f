#!/usr/bin/env bash
# Create .venv and install the provider, as much of it as the target needs.
#
#   scripts/install.sh demo   what `make demo` needs: Airflow, MPI, matplotlib ("[demo]")
#   scripts/install.sh full   every extra and the dev tools ("[all,dev]"), plus the Debian packages
#                             the tests use: libkrb5-dev (psana2), chromium + chromium-driver (the
#                             UI test), docker-compose (the compose file check), postgresql
#                             (scripts/services/postgres.sh)
#
# Airflow is installed at the version the suite is tested with (AIRFLOW_VERSION, 3.3.2); the
# package itself accepts apache-airflow>=3.1,<4. Each profile leaves a stamp (.venv/.installed-*)
# that the Makefile uses; "full" also stamps "demo", which it contains.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO"

profile=${1:-full}
AIRFLOW_VERSION=${AIRFLOW_VERSION:-3.3.2}
case "$profile" in
demo) extras="demo" apt_pkgs=() stamps=(demo) ;;
full) extras="all,dev" apt_pkgs=(libkrb5-dev docker-compose chromium chromium-driver postgresql) stamps=(demo full) ;;
-h | --help)
    awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"
    exit 0
    ;;
*)
    echo "install: unknown profile '$profile' (expected: demo or full)" >&2
    exit 2
    ;;
esac

need_apt=()
for pkg in "${apt_pkgs[@]}"; do
    dpkg -s "$pkg" >/dev/null 2>&1 || need_apt+=("$pkg")
done
if [ ${#need_apt[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "install: apt-get install ${need_apt[*]}"
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
    else
        echo "install: please install Debian packages: ${need_apt[*]} (psana2, UI, compose and PostgreSQL checks)" >&2
    fi
fi

PYTHON=${PYTHON:-python3}
if ! command -v uv >/dev/null 2>&1; then
    "$PYTHON" -m pip install -q uv
fi
UV=$(command -v uv || echo "$PYTHON -m uv")
[ -x .venv/bin/python ] || $UV venv -q -p "$PYTHON" .venv
$UV pip install -q -p .venv/bin/python -e ".[$extras]" "apache-airflow==$AIRFLOW_VERSION"
for s in "${stamps[@]}"; do touch ".venv/.installed-$s"; done
echo "install: .venv ready for '$profile' ($(.venv/bin/python --version), extras [$extras])"
