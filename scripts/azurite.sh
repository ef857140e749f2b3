#!/usr/bin/env bash
# Installs Azurite (the Azure Storage emulator) once into a cache outside the repo and prints the path
# of its `azurite-blob` binary as the last line of output. Idempotent: a second run only prints the path.
#
# Why a pinned 3.35.0: newer Azurite releases need Node 22, and the machine image ships Node 20.
# Why a cache outside the repo: node_modules does not belong in the checkout, and tests/devstack find
# the binary through this script (or $AZURITE_BLOB) without a network round-trip after the first run.
set -euo pipefail

VERSION="3.35.0"
CACHE="${AZURITE_CACHE:-$HOME/.cache/apim-token-rotator/azurite}"
BIN="$CACHE/node_modules/.bin/azurite-blob"
STAMP="$CACHE/.installed-$VERSION"

if [[ -x "$BIN" && -f "$STAMP" ]]; then
    echo "$BIN"
    exit 0
fi

if ! command -v npm >/dev/null 2>&1; then
    echo "npm not found; installing Debian's nodejs and npm" >&2
    SUDO=""
    if [[ "$(id -u)" != "0" ]]; then SUDO="sudo"; fi
    $SUDO apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq nodejs npm >&2
fi

mkdir -p "$CACHE"
echo "installing azurite@$VERSION into $CACHE (first run only)…" >&2
# A package.json of our own keeps npm from walking up into some parent project.
if [[ ! -f "$CACHE/package.json" ]]; then
    printf '{"name": "apim-token-rotator-azurite", "private": true}\n' > "$CACHE/package.json"
fi
npm install --prefix "$CACHE" --no-audit --no-fund --loglevel=error "azurite@$VERSION" >&2
if [[ ! -x "$BIN" ]]; then
    echo "azurite installed but $BIN is missing" >&2
    exit 1
fi
rm -f "$CACHE"/.installed-*
touch "$STAMP"
echo "$BIN"
