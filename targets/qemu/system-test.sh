#!/usr/bin/env bash
# Whole-system test: a minimal Debian arm64 system under qemu-system-aarch64 installs the
# yurthub .deb, joins a stand-in cloud on the host (examples/cloud.rs) with a bootstrap token,
# and proves it from inside: the unit active, /v1/healthz, a proxied kubelet request, the
# dummy address, the certificates. Needs root (debootstrap, chroot) and Debian's packages.
#
#   targets/qemu/system-test.sh            # everything; the rootfs is cached in $WORK
#   WORK=/var/tmp/yq SUITE=bookworm targets/qemu/system-test.sh
#
# Exit 0 when every check printed by the guest passed; the console log is $WORK/console.log.
set -euo pipefail
cd "$(dirname "$0")/../.."
repo=$PWD
work=${WORK:-/var/tmp/yurthub-qemu}
suite=${SUITE:-bookworm}
mirror=${MIRROR:-http://deb.debian.org/debian}
boot_timeout=${BOOT_TIMEOUT:-1500}
mkdir -p "$work"
t0=$(date +%s)
step() { echo "== $* ($(( $(date +%s) - t0 )) s)"; }

step "host packages"
need=()
for cmd in qemu-system-aarch64 qemu-aarch64-static debootstrap mkfs.ext4 update-binfmts; do
  command -v "$cmd" >/dev/null 2>&1 || need+=("$cmd")
done
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq || true
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    qemu-system-arm qemu-user-static binfmt-support debootstrap e2fsprogs >/dev/null
fi

step "binfmt for arm64 chroots"
mountpoint -q /proc/sys/fs/binfmt_misc || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
if [ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]; then
  update-binfmts --enable qemu-aarch64 2>/dev/null || true
fi
if [ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]; then
  # The registration qemu-user-static ships, by hand (F: the interpreter is opened now, so
  # it works inside chroots).
  printf '%s' ':qemu-aarch64:M::\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xb7\x00:\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff:/usr/bin/qemu-aarch64-static:F' \
    > /proc/sys/fs/binfmt_misc/register
fi

step "Debian $suite arm64 root filesystem"
if [ ! -s "$work/rootfs.tar" ]; then
  rm -rf "$work/rootfs"
  debootstrap --arch=arm64 --variant=minbase \
    --include=systemd-sysv,udev,dbus,linux-image-arm64,initramfs-tools,iproute2,curl,ca-certificates \
    "$suite" "$work/rootfs" "$mirror"
  tar -C "$work/rootfs" -cf "$work/rootfs.tar" .
  rm -rf "$work/rootfs"
fi

step "the arm64 package"
deb=$(ls target/deb/yurthub_*_arm64.deb 2>/dev/null | head -1 || true)
if [ -z "$deb" ]; then
  cross/build.sh aarch64-unknown-linux-musl
  targets/deb/build.sh arm64 target/aarch64-unknown-linux-musl/release/yurthub
  deb=$(ls target/deb/yurthub_*_arm64.deb | head -1)
fi
echo "$deb"

step "the cloud on the host (10.0.2.2 from the guest)"
cargo build -q --example cloud
coproc CLOUD { exec target/debug/examples/cloud 127.0.0.1:0 10.0.2.2; }
trap 'kill "$CLOUD_PID" 2>/dev/null || true' EXIT
read -r line <&"${CLOUD[0]}"
echo "$line"
port=$(sed -n 's/.*port=\([0-9]*\).*/\1/p' <<<"$line")
token=$(sed -n 's/.*token=\([^ ]*\).*/\1/p' <<<"$line")
pin=$(sed -n 's/.*pin=\([^ ]*\).*/\1/p' <<<"$line")

step "the guest's disk"
guest=$work/guest
rm -rf "$guest" && mkdir -p "$guest"
tar -C "$guest" -xf "$work/rootfs.tar"
cp "$deb" "$guest/tmp/yurthub.deb"
chroot "$guest" dpkg -i /tmp/yurthub.deb
rm "$guest/tmp/yurthub.deb"
cat > "$guest/etc/default/yurthub" <<EOF
YURTHUB_ARGS="--server-addr=https://10.0.2.2:$port --node-name=qemu-node --nodepool-name=pool-a --join-token=$token --discovery-token-ca-cert-hash=$pin --heartbeat-interval-seconds=2 --v=2"
EOF
echo qemu-node > "$guest/etc/hostname"
printf '/dev/vda / ext4 rw 0 1\n' > "$guest/etc/fstab"
mkdir -p "$guest/etc/systemd/network"
# Only the NIC: a network manager that matched hub-dummy0 too (it is "ether") would flush the
# hub's address from it (the hub puts it back within a minute).
printf '[Match]\nName=eth* en*\n\n[Network]\nDHCP=ipv4\n' > "$guest/etc/systemd/network/10-wired.network"
chroot "$guest" systemctl enable systemd-networkd >/dev/null 2>&1
cat > "$guest/usr/local/bin/yurthub-check" <<'EOF'
#!/bin/sh
# Runs once yurthub.service has started: waits for readiness, prints the checks, powers off.
say() { echo "YURTHUB-CHECK $*" > /dev/console; }
i=0
until curl -sf -o /dev/null http://127.0.0.1:10267/v1/readyz || [ $i -ge 150 ]; do i=$((i+1)); sleep 2; done
say "unit $(systemctl is-active yurthub)"
say "healthz $(curl -s -w ' %{http_code}' http://127.0.0.1:10267/v1/healthz)"
say "readyz $(curl -s -w ' %{http_code}' http://127.0.0.1:10267/v1/readyz)"
code=$(curl -s -A 'kubelet/v1.36.2 (linux/arm64) kubernetes/qemu' -o /tmp/pods -w '%{http_code}' http://127.0.0.1:10261/api/v1/namespaces/default/pods)
if grep -q '"name":"web-1"' /tmp/pods; then say "pods web-1 $code"; else say "pods missing $code"; fi
say "dummy $(ip -br addr | grep -o '169.254.2.1/32' | head -1)"
say "links $(ip -br addr | tr -s ' ' | tr '\n' ';')"
say "certs $(ls /var/lib/yurthub/pki | tr '\n' ' ')"
say "cache $(ls /etc/kubernetes/cache/kubelet 2>/dev/null | tr '\n' ' ')"
journalctl -u yurthub --no-pager -o cat | grep -i -E 'dummy|lo instead|serving|certificate' | sed 's/^/YURTHUB-LOG /' > /dev/console
say DONE
systemctl poweroff
EOF
chmod 0755 "$guest/usr/local/bin/yurthub-check"
cat > "$guest/etc/systemd/system/yurthub-check.service" <<'EOF'
[Unit]
Description=Checks the hub from inside the guest
After=yurthub.service
Wants=yurthub.service

[Service]
Type=oneshot
ExecStart=/usr/local/bin/yurthub-check

[Install]
WantedBy=multi-user.target
EOF
chroot "$guest" systemctl enable yurthub-check.service >/dev/null 2>&1
kernel=$(ls "$guest"/boot/vmlinuz-* | head -1)
initrd=$(ls "$guest"/boot/initrd.img-* | head -1)
cp "$kernel" "$work/vmlinuz"
cp "$initrd" "$work/initrd.img"
rm -f "$work/disk.img"
mkfs.ext4 -q -F -L root -d "$guest" "$work/disk.img" 3G

step "boot (software emulation; minutes)"
set +e
timeout "$boot_timeout" qemu-system-aarch64 -M virt -cpu cortex-a57 -smp 2 -m 1024 \
  -nographic -no-reboot -kernel "$work/vmlinuz" -initrd "$work/initrd.img" \
  -append "root=/dev/vda rw console=ttyAMA0 systemd.show_status=0 quiet" \
  -drive file="$work/disk.img",if=none,format=raw,id=hd -device virtio-blk-device,drive=hd \
  -netdev user,id=n0 -device virtio-net-device,netdev=n0 </dev/null > "$work/console.log" 2>&1
rc=$?
set -e
step "guest exited ($rc)"
grep -a 'YURTHUB-' "$work/console.log" || true

ok=1
check() { grep -aq "YURTHUB-CHECK $1" "$work/console.log" || { echo "FAILED: $1"; ok=0; }; }
check "unit active"
check "healthz OK 200"
check "readyz OK 200"
check "pods web-1 200"
check "dummy 169.254.2.1/32"
check "certs .*yurthub-current.pem.*yurthub-server-current.pem"
check "cache .*pods.v1.core"
check DONE
[ $ok = 1 ] && echo "whole-system test passed in $(( $(date +%s) - t0 )) s" || { echo "whole-system test failed; see $work/console.log"; exit 1; }
