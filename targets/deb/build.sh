#!/usr/bin/env bash
# Builds target/deb/yurthub_<version>_<arch>.deb from a static binary, with dpkg-deb.
#   targets/deb/build.sh <arm64|armhf|amd64> <path to the yurthub binary>
set -euo pipefail
cd "$(dirname "$0")/../.."
arch=${1:?arch: arm64, armhf or amd64}
bin=${2:?path to the static yurthub binary}
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
root=target/deb/yurthub_${version}_${arch}
rm -rf "$root"
install -d -m 0755 "$root/DEBIAN" "$root/usr/bin" "$root/lib/systemd/system" "$root/etc/default" \
  "$root/usr/share/doc/yurthub" "$root/usr/share/lintian/overrides"
install -m 0755 "$bin" "$root/usr/bin/yurthub"
install -m 0644 targets/systemd/yurthub.service "$root/lib/systemd/system/yurthub.service"
install -m 0644 targets/systemd/yurthub.default "$root/etc/default/yurthub"
install -m 0644 targets/deb/copyright "$root/usr/share/doc/yurthub/copyright"
printf 'yurthub (%s) unstable; urgency=medium\n\n  * Release %s.\n\n -- yurthub maintainers <yurthub@example.org>  %s\n' \
  "$version" "$version" "$(date -R -d @"${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}")" \
  | gzip -9n > "$root/usr/share/doc/yurthub/changelog.gz"
chmod 0644 "$root/usr/share/doc/yurthub/changelog.gz"
# A Rust binary is static on purpose: it runs on any distribution of the device.
printf 'yurthub: statically-linked-binary [usr/bin/yurthub]\nyurthub: no-manual-page [usr/bin/yurthub]\n' \
  > "$root/usr/share/lintian/overrides/yurthub"
chmod 0644 "$root/usr/share/lintian/overrides/yurthub"
install -m 0755 targets/deb/postinst targets/deb/prerm targets/deb/postrm "$root/DEBIAN/"
echo /etc/default/yurthub > "$root/DEBIAN/conffiles"
size=$(du -k -s "$root" | cut -f1)
cat > "$root/DEBIAN/control" <<CONTROL
Package: yurthub
Version: $version
Architecture: $arch
Maintainer: yurthub maintainers <yurthub@example.org>
Installed-Size: $size
Section: admin
Priority: optional
Homepage: https://openyurt.io/
Description: edge-node proxy and cache in front of the Kubernetes apiserver
 yurthub sits between an edge node's Kubernetes components (kubelet,
 kube-proxy, coredns, flannel) and the cloud kube-apiserver. It proxies
 their requests with the node's certificate, caches the answers on disk,
 and serves them while the cloud is unreachable, so the node keeps its
 pods running through a WAN outage, even across a reboot.
CONTROL
find "$root" -type d -exec chmod 0755 {} +
dpkg-deb --root-owner-group --build "$root" "target/deb/yurthub_${version}_${arch}.deb" >/dev/null
echo "target/deb/yurthub_${version}_${arch}.deb"
