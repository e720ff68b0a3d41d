#!/usr/bin/env bash
# Builds a static release binary for one target on a Debian host, without docker.
#   cross/build.sh aarch64-unknown-linux-musl | armv7-unknown-linux-musleabihf | arm-unknown-linux-musleabi
#   SIZE=1 cross/build.sh <target>   # also rebuild std for size (-Zbuild-std, optimize_for_size)
# Prints the path of the stripped binary and its size.
set -euo pipefail
cd "$(dirname "$0")/.."
target=${1:?usage: cross/build.sh <target>}
args=(--release --config cross/debian.toml --target "$target")
case "$target" in
  aarch64-unknown-linux-musl)
    if [ "${SIZE:-0}" = 1 ]; then
      args+=(-Zbuild-std=std,panic_abort -Zbuild-std-features=optimize_for_size)
      export RUSTC_BOOTSTRAP=1
    fi ;;
  armv7-unknown-linux-musleabihf|arm-unknown-linux-musleabi)
    # No rust-std is published for these targets: std is always built from source.
    export RUSTC_BOOTSTRAP=1
    if [ "${SIZE:-0}" = 1 ]; then
      args+=(-Zbuild-std=std,panic_abort -Zbuild-std-features=optimize_for_size)
    else
      args+=(-Zbuild-std=std,panic_abort)
    fi ;;
  *) ;;
esac
cargo build "${args[@]}" --bin yurthub
bin="target/$target/release/yurthub"
echo "$bin $(stat -c %s "$bin") bytes"
