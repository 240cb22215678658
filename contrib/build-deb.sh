#!/usr/bin/env bash
# Builds target/debian/xdpstat_VERSION_ARCH.deb: the release binary, the
# man pages and completions it writes from its own flag definitions, the
# systemd unit pointing at /usr/bin, the examples and the docs. Needs
# cargo-deb (.ci/setup installs it) and the BPF toolchain.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked -p xdpstat
assets=target/release/deb-assets
rm -rf "$assets"
target/release/xdpstat --generate-docs "$assets"
gzip -9n "$assets"/man/*.1
sed 's|/usr/local/bin/xdpstat|/usr/bin/xdpstat|' contrib/xdpstat@.service > "$assets/xdpstat@.service"
cargo deb --no-build --locked -p xdpstat --output target/debian/
