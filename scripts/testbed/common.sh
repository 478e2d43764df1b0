# Shared helpers for the test-bed scripts. Sourced, not run.
# shellcheck shell=bash

CACHE_ROOT=${TANKD_CACHE:-$HOME/.cache/tankd}
VENV="$CACHE_ROOT/venv"

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

# What the test bed needs on the host: QEMU (backports: bookworm's 7.2 conflicts with the
# qemu-utils 10 machines here carry), a compiler for the module, and virtme-ng to boot the
# kernel with the host's own userland as its root.
ensure_host_packages() {
  local missing=()
  command -v qemu-system-x86_64 >/dev/null || missing+=(qemu-system-x86)
  command -v make >/dev/null || missing+=(make)
  command -v gcc >/dev/null || missing+=(gcc)
  command -v busybox >/dev/null || missing+=(busybox-static)
  dpkg -s udev >/dev/null 2>&1 || missing+=(udev)
  dpkg -s kmod >/dev/null 2>&1 || missing+=(kmod)
  # The Docker volume-driver tests start their own dockerd inside the VM.
  [ -x /usr/sbin/dockerd ] || missing+=(docker.io)
  if [ ${#missing[@]} -gt 0 ]; then
    step "installing ${missing[*]}"
    apt_install -t bookworm-backports "${missing[@]}"
  fi
  if [ ! -x "$VENV/bin/vng" ]; then
    step "installing virtme-ng into $VENV"
    python3 -m venv "$VENV" || die "python3 -m venv failed"
    "$VENV/bin/pip" install -q virtme-ng >/dev/null || die "pip install virtme-ng failed"
  fi
}
