#!/usr/bin/env bash
# Build (once) and cache a real kube-apiserver from Debian's `kubernetes` source package,
# and make sure etcd is installed. Idempotent; meant to run as root on Debian 12.
#
# Last line on stdout: the path of the kube-apiserver binary.
#
# Environment:
#   KUBE_CACHE            cache directory (default: $HOME/.cache/apim-token-rotator)
#   KUBE_SRC_VERSION      Debian source version (default: 1.20.5+really1.20.2-1.1+deb12u1)
#
# Nothing here touches the system's own apt source lists: the deb-src list lives in a private
# directory (Dir::Etc::SourceParts / Dir::State::Lists), removed afterwards.
set -euo pipefail

CACHE="${KUBE_CACHE:-$HOME/.cache/apim-token-rotator}"
UPSTREAM="1.20.2"
SRC_VERSION="${KUBE_SRC_VERSION:-1.20.5+really1.20.2-1.1+deb12u1}"
BIN_DIR="$CACHE/kube-apiserver-$UPSTREAM"
BIN="$BIN_DIR/kube-apiserver"

log() { echo "kube-apiserver.sh: $*" >&2; }

need_root() {
  if [ "$(id -u)" != "0" ]; then
    log "must run as root to install packages (missing: $*)"
    exit 1
  fi
}

# --- 1. packages ------------------------------------------------------------------------------
missing=()
command -v etcd >/dev/null 2>&1 || [ -x /usr/bin/etcd ] || missing+=(etcd-server)
command -v jq >/dev/null 2>&1 || missing+=(jq)
if [ ! -x "$BIN" ]; then
  command -v go >/dev/null 2>&1 || [ -x /usr/lib/go/bin/go ] || missing+=(golang-go)
  command -v rsync >/dev/null 2>&1 || missing+=(rsync)
fi
if [ "${#missing[@]}" -gt 0 ]; then
  need_root "${missing[@]}"
  log "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # apt-get update only when the package lists are empty or the install fails without it.
  if ! ls /var/lib/apt/lists/*_Packages >/dev/null 2>&1; then
    apt-get update -qq >&2
  fi
  if ! apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2; then
    apt-get update -qq >&2
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
  fi
fi

# The etcd-server package starts a system etcd on 127.0.0.1:2379. The devstack never relies on
# default ports, but do not leave an unused daemon running either.
if command -v systemctl >/dev/null 2>&1 && systemctl is-enabled etcd >/dev/null 2>&1; then
  systemctl disable --now etcd >/dev/null 2>&1 || true
fi
if [ -f /run/etcd.pid ] || pgrep -x etcd -u etcd >/dev/null 2>&1; then
  # sysvinit-style or container without systemd: stop only the system service's etcd (user etcd).
  if command -v service >/dev/null 2>&1; then service etcd stop >/dev/null 2>&1 || true; fi
fi

# --- 2. kube-apiserver ------------------------------------------------------------------------
if [ -x "$BIN" ]; then
  echo "$BIN"
  exit 0
fi

need_root golang-go
# One build at a time: parallel test runs (or `make demo` beside `make test`) that all find the cache
# empty wait here for the first build instead of compiling kube-apiserver several times over.
mkdir -p "$CACHE"
exec 9>"$CACHE/.kube-apiserver.lock"
if ! flock -n 9; then
  log "another build of kube-apiserver is running; waiting for it"
  flock 9
fi
if [ -x "$BIN" ]; then
  echo "$BIN"
  exit 0
fi
echo "building kube-apiserver $UPSTREAM from Debian source (first run, ~3-5 min)…"
start=$(date +%s)
W="$(mktemp -d "${TMPDIR:-/tmp}/kube-src.XXXXXX")"
trap 'rm -rf "$W"' EXIT
mkdir -p "$W/parts" "$W/lists/partial" "$W/src"

# A private deb-src list derived from the system's deb822 sources.
SYS_SOURCES=/etc/apt/sources.list.d/debian.sources
if [ -f "$SYS_SOURCES" ]; then
  sed -E 's/^Types:.*/Types: deb-src/' "$SYS_SOURCES" > "$W/parts/debian-src.sources"
else
  cat > "$W/parts/debian-src.sources" <<'EOF'
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb-src
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
fi
APT_OPTS=(-o Dir::Etc::SourceList=/dev/null -o "Dir::Etc::SourceParts=$W/parts"
          -o "Dir::State::Lists=$W/lists" -o Debug::NoLocking=1)
echo "fetching Debian source package kubernetes=$SRC_VERSION…"
apt-get "${APT_OPTS[@]}" update -qq >&2
(cd "$W/src" && apt-get "${APT_OPTS[@]}" source --download-only "kubernetes=$SRC_VERSION" >&2)

orig="$(ls "$W"/src/kubernetes_*.orig.tar.gz | head -n1)"
tar -C "$W/src" -xzf "$orig"
srcdir="$(find "$W/src" -maxdepth 1 -type d -name 'kubernetes-*' | head -n1)"
[ -n "$srcdir" ] || { log "unpacked source tree not found"; exit 1; }

echo "compiling cmd/kube-apiserver (CGO_ENABLED=0 GOPROXY=off)…"
export PATH="/usr/lib/go/bin:$PATH"
export GOPATH="$W/gopath" GOCACHE="$W/gocache" GOFLAGS=-mod=vendor
(cd "$srcdir" && CGO_ENABLED=0 GOPROXY=off make WHAT=cmd/kube-apiserver >"$W/build.log" 2>&1) || {
  log "build failed; last lines of the build log:"
  tail -n 40 "$W/build.log" >&2
  exit 1
}
built="$(find "$srcdir/_output" -type f -name kube-apiserver -perm -u+x | head -n1)"
[ -n "$built" ] || { log "build produced no kube-apiserver binary"; exit 1; }

mkdir -p "$BIN_DIR"
cp "$built" "$BIN.tmp.$$"
chmod 0755 "$BIN.tmp.$$"
mv -f "$BIN.tmp.$$" "$BIN"
echo "built $("$BIN" --version 2>/dev/null || echo kube-apiserver) in $(( $(date +%s) - start ))s; cached at $BIN_DIR"
echo "$BIN"
