#!/usr/bin/env bash
# Installs the system packages the build needs (Debian), if missing.
set -euo pipefail
need=()
for pkg in libclang-dev libssl-dev pkg-config build-essential; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing Debian packages: ${need[*]}"
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  $sudo_cmd env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
command -v cargo >/dev/null 2>&1 || { echo "cargo not found: install Rust (https://rustup.rs)"; exit 1; }
command -v java >/dev/null 2>&1 || { echo "java not found: install a JDK 17+"; exit 1; }
command -v mvn >/dev/null 2>&1 || { echo "mvn not found: install Maven"; exit 1; }
