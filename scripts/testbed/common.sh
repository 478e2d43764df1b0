# Shared helpers for the test-bed scripts. Sourced, not run.
# shellcheck shell=bash

CACHE_ROOT=${TANKD_CACHE:-$HOME/.cache/tankd}
# virtme-ng boots the test VM; pinned, and its venv keyed by the version.
VIRTME_NG_VERSION=1.42
VENV="$CACHE_ROOT/venv-virtme-ng-$VIRTME_NG_VERSION"

log() { printf '[testbed] %s\n' "$*" >&2; }
step() { printf '[testbed] ... %s\n' "$*" >&2; }
die() {
  printf '[testbed] error: %s\n' "$*" >&2
  exit 1
}

need_root() {
  [ "$(id -u)" = 0 ] || die "run as root (tankd and its test bed manage pools and devices)"
}

# bookworm-backports carries the 6.12 kernel and OpenZFS 2.3; contrib carries zfs-dkms.
ensure_apt_sources() {
  local f=/etc/apt/sources.list.d/tankd-testbed.sources
  if [ ! -f "$f" ]; then
    step "adding bookworm-backports and contrib to apt sources ($f)"
    cat >"$f" <<'EOF'
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates bookworm-backports
Components: contrib
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
    rm -f "$CACHE_ROOT/apt-updated"
  fi
  # One `apt-get update` a day is enough to resolve versions for the cache key.
  mkdir -p "$CACHE_ROOT"
  if [ -z "$(find "$CACHE_ROOT/apt-updated" -mmin -1440 2>/dev/null)" ]; then
    step "apt-get update"
    apt-get update -q >/dev/null || die "apt-get update failed"
    touch "$CACHE_ROOT/apt-updated"
  fi
}

apt_install() {
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@" >/dev/null \
    || die "apt-get install $* failed"
}

# The project's own directory of test-bed scripts (common.sh is sourced from elsewhere too).
TESTBED_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

# Installs the packages of the given groups in $TESTBED_DIR/packages that are not installed.
# One apt-get run per release; dpkg keeps a locally edited conffile (ceph-osd pulls in sudo).
ensure_packages() {
  local pkg group release _ want=" $* "
  local -A missing=()
  while read -r pkg group release _; do
    case $pkg in '' | '#'*) continue ;; esac
    [[ $want == *" $group "* ]] || continue
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' && continue
    missing[$release]+=" $pkg"
  done <"$TESTBED_DIR/packages"
  [ ${#missing[@]} -gt 0 ] || return 0
  ensure_apt_sources
  for release in "${!missing[@]}"; do
    step "installing${missing[$release]} (from $release)"
    # Plain bookworm takes no -t: that would pin it above bookworm-security's updates.
    local target=()
    [ "$release" = bookworm ] || target=(-t "$release")
    # shellcheck disable=SC2086
    apt_install "${target[@]}" -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
      ${missing[$release]}
  done
}

# What booting the test VM needs on the host: the vm packages and virtme-ng, which boots
# the kernel with the host's own userland as its root.
ensure_host_packages() {
  ensure_packages vm
  if [ ! -x "$VENV/bin/vng" ]; then
    step "installing virtme-ng into $VENV"
    python3 -m venv "$VENV" || die "python3 -m venv failed"
    "$VENV/bin/pip" install -q "virtme-ng==$VIRTME_NG_VERSION" >/dev/null || die "pip install virtme-ng failed"
  fi
}

# Rust (the toolchain this project builds with), clippy and rustfmt, installed with rustup
# when the machine has none.
ensure_rust() {
  if ! command -v cargo >/dev/null; then
    [ -x "$HOME/.cargo/bin/cargo" ] || {
      step "installing Rust 1.95 with rustup"
      command -v curl >/dev/null || apt_install curl ca-certificates
      curl -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal --default-toolchain 1.95 \
        || die "rustup install failed"
    }
    export PATH="$HOME/.cargo/bin:$PATH"
  fi
  cargo clippy --version >/dev/null 2>&1 && cargo fmt --version >/dev/null 2>&1 \
    || rustup component add clippy rustfmt >/dev/null 2>&1 || die "need clippy and rustfmt"
  command -v gcc >/dev/null || apt_install gcc libc6-dev
}
