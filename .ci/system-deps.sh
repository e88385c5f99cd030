#!/usr/bin/env bash
# Installs the system packages the platform and its tests need, where they are missing and
# this machine can install them (Debian/Ubuntu with root or passwordless sudo). What it cannot
# install is named in one line; the tests that need it then skip with that reason.
set -u

missing=()
have() { command -v "$1" >/dev/null 2>&1; }
have_pg() { have initdb || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; }

have java || missing+=("openjdk-17-jre-headless:Java for Spark")
have redis-server || missing+=("redis-server:Redis for the serving cache tests")
have_pg || missing+=("postgresql:PostgreSQL for the production-profile tests")
have chromium || missing+=("chromium:headless Chromium for the web page tests")
have promtool || missing+=("prometheus:promtool for the monitoring config checks")
have npm || missing+=("npm:npm for the front-end packages")
have shellcheck || missing+=("shellcheck:shellcheck for the deployment scripts")

# kubectl renders the kustomize overlays; Debian's own package (kubernetes-client 1.20) is too old for
# them, so it is named, not installed: the manifest tests skip without it.
have kubectl || echo "missing prerequisite: kubectl (renders k8s/ overlays; install it from the Kubernetes package repository); the manifest tests will skip" >&2

[ ${#missing[@]} -eq 0 ] && exit 0
packages=()
for item in "${missing[@]}"; do packages+=("${item%%:*}"); done

sudo=""
if [ "$(id -u)" -ne 0 ]; then
  if have sudo && sudo -n true 2>/dev/null; then sudo="sudo -n"; else sudo="none"; fi
fi
if have apt-get && [ "$sudo" != "none" ]; then
  echo "installing system packages: ${packages[*]}"
  $sudo apt-get update -qq >/dev/null && \
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null \
    && exit 0
  echo "apt-get could not install: ${packages[*]}" >&2
fi
for item in "${missing[@]}"; do
  echo "missing prerequisite: ${item%%:*} (${item#*:}); install it with your package manager, e.g. apt-get install ${item%%:*}" >&2
done
# Java is the one hard requirement: without it no Spark job can run.
have java || exit 1
exit 0
