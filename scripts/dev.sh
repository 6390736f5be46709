#!/usr/bin/env bash
# Installs what DonutDB's build needs (idempotent), then runs a just task:
#   bash scripts/dev.sh demo    # quick start, line one
#   bash scripts/dev.sh ci      # quick start, line two: every test (= .ci/run)
set -euo pipefail
cd "$(dirname "$0")/.."

ZIGLANG_VERSION=0.17.1
JUST_VERSION=1.59.0

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

# pip's console scripts land in one of these, depending on the Python set-up.
for dir in "$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')" \
           "$(python3 -m site --user-base)/bin" "$HOME/.cargo/bin"; do
  case ":$PATH:" in *":$dir:"*) ;; *) PATH="$dir:$PATH" ;; esac
done
export PATH

pip_install() {
  python3 -m pip install --quiet --disable-pip-version-check "$@" 2>/dev/null \
    || python3 -m pip install --quiet --disable-pip-version-check --user "$@"
}

if ! rustup target list --installed | grep -qx wasm32-wasip2; then
  say "adding the wasm32-wasip2 Rust target"
  rustup target add wasm32-wasip2
fi
if [ "$(python3 -m ziglang version 2>/dev/null)" != "$ZIGLANG_VERSION" ]; then
  say "installing zig $ZIGLANG_VERSION (C compiler for SQLite in the guest)"
  pip_install "ziglang==$ZIGLANG_VERSION"
fi
if ! just --version 2>/dev/null | grep -q "$JUST_VERSION"; then
  say "installing just $JUST_VERSION"
  pip_install "rust-just==$JUST_VERSION"
fi

exec just "${@:-demo}"
