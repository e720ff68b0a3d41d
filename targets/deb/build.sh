#!/usr/bin/env bash
# Builds target/deb/yurthub_<version>_<arch>.deb from a static binary, with dpkg-deb.
#   targets/deb/build.sh <arm64|armhf|amd64> <path to the yurthub binary>
set -euo pipefail
cd "$(dirname "$0")/../.."
arch=${1:?arch: arm64, armhf or amd64}
bin=${2:?path to the static yurthub binary}
# The package says static (its lintian override, "runs on any distribution"): a binary that
# asks for a program interpreter (glibc's or musl's loader), or is for another machine, is
# refused rather than packaged.
command -v readelf >/dev/null || { echo "readelf (binutils) is needed to check $bin" >&2; exit 1; }
if readelf -lW "$bin" | grep -q 'program interpreter'; then
  echo "$bin is dynamically linked: build a static one (cross/build.sh <target>-musl...)" >&2
  exit 1
fi
machine=$(readelf -hW "$bin" | sed -n 's/^ *Machine: *//p')
case "$arch:$machine" in
  arm64:AArch64|armhf:ARM|amd64:*X86-64) ;;
  *) echo "$bin is for '$machine', not $arch" >&2; exit 1 ;;
esac
# Raspberry Pi OS's armhf runs on ARMv6 (Pi Zero/1) too: an ARMv7 binary dies there with
# "Illegal instruction", so the armhf package takes only one that runs on an ARM1176. (The
# ELF's Tag_CPU_arch cannot tell: ring's run-time-chosen NEON code marks even an ARMv6 build
# v7.) It is run on that CPU under qemu when qemu-arm is here; without it, the ARMv6 build's
# soft-float ABI (arm-unknown-linux-musleabi) is the sign, the ARMv7 one's is hard-float.
if [ "$arch" = armhf ]; then
  if command -v qemu-arm >/dev/null; then
    if ! { qemu-arm -cpu arm1176 "$bin" --version; } >/dev/null 2>&1; then
      echo "$bin does not run on a Pi Zero/1's CPU (qemu-arm -cpu arm1176): the armhf package needs an ARMv6 binary (cross/build.sh arm-unknown-linux-musleabi)" >&2
      exit 1
    fi
  elif ! readelf -hW "$bin" | grep -q 'soft-float ABI'; then
    echo "$bin is not the ARMv6 build (hard-float ABI): the armhf package needs cross/build.sh arm-unknown-linux-musleabi" >&2
    exit 1
  fi
fi
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
root=target/deb/yurthub_${version}_${arch}
rm -rf "$root"
install -d -m 0755 "$root/DEBIAN" "$root/usr/bin" "$root/usr/lib/yurthub" "$root/lib/systemd/system" "$root/etc/default" \
  "$root/usr/share/doc/yurthub" "$root/usr/share/lintian/overrides"
install -m 0755 "$bin" "$root/usr/bin/yurthub"
install -m 0755 targets/systemd/yurthub-configured "$root/usr/lib/yurthub/yurthub-configured"
install -m 0644 targets/systemd/yurthub.service "$root/lib/systemd/system/yurthub.service"
install -m 0644 targets/systemd/yurthub.default "$root/etc/default/yurthub"
install -m 0644 targets/deb/copyright "$root/usr/share/doc/yurthub/copyright"
printf 'yurthub (%s) unstable; urgency=medium\n\n  * Release %s.\n\n -- yurthub maintainers <yurthub@example.org>  %s\n' \
  "$version" "$version" "$(date -R -d @"${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}")" \
  | gzip -9n > "$root/usr/share/doc/yurthub/changelog.gz"
chmod 0644 "$root/usr/share/doc/yurthub/changelog.gz"
# A Rust binary is static on purpose: it runs on any distribution of the device. (A static-PIE,
# as the x86_64 musl build is, has a dynamic section but no interpreter and needs nothing.)
printf 'yurthub: statically-linked-binary [usr/bin/yurthub]\nyurthub: no-manual-page [usr/bin/yurthub]\nyurthub: shared-library-lacks-prerequisites [usr/bin/yurthub]\n' \
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
