#!/usr/bin/env bash
# Build (once, then reuse) what the arm64 test VM boots, from Debian packages only:
#   - Debian's arm64 kernel and its modules (vivid, V4L2 core, configfs, 9p, virtio);
#   - gpio-sim.ko, built out of tree from linux-source (Debian does not build it), and
#     v4l2loopback.ko from Debian's v4l2loopback-dkms source, both against the matching
#     linux-headers with the cross compiler;
#   - a busybox initramfs holding those modules, the arm64 C runtime and tests/vm/init.
# Prints the folder holding `Image` and `initrd.gz`. Everything goes under
# $KENSA_CACHE/vm/<kernel ABI>; deleting it only costs time (~1 min, 215 MB download).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
# The kernel ABI the modules are built for. Debian keeps one package name per ABI, so a
# pinned name always brings a matching image and headers.
ABI="${KENSA_VM_ABI:-6.1.0-57}"
KVER="$ABI-arm64"
out="${KENSA_CACHE:-/var/cache/kensa}/vm/$ABI"
# The initramfs also depends on the init script; rebuild when it changes.
stamp="$(sha256sum "$here/init" "$0" | sha256sum | cut -c1-16)"
if [ -f "$out/ready" ] && [ "$(cat "$out/ready")" = "$stamp" ]; then echo "$out"; exit 0; fi

log() { echo "vm/prepare: $*" >&2; }
mkdir -p "$out/debs"
cd "$out/debs"
debs=(
  "linux-image-$KVER:arm64" "linux-headers-$KVER:arm64" "linux-headers-$ABI-common"
  linux-kbuild-6.1 busybox-static:arm64 linux-source-6.1 v4l2loopback-dkms
)
for d in "${debs[@]}"; do
  ls "${d%%:*}"_*.deb >/dev/null 2>&1 && continue
  log "downloading $d"
  # apt's sandbox user cannot write to a root-owned cache; the download is checked by apt.
  for attempt in 1 2; do
    apt-get download -qq "$d" 2>&1 | grep -v 'unsandboxed' >&2 || true
    ls "${d%%:*}"_*.deb >/dev/null 2>&1 && break
    # A machine whose package lists are missing or older than the archive's.
    [ "$attempt" = 1 ] && { log "refreshing the package lists"; apt-get update -qq >&2 || true; }
  done
  ls "${d%%:*}"_*.deb >/dev/null 2>&1 || { log "could not download $d from the Debian archive"; exit 1; }
done

work="$out/work"
rm -rf "$work"; mkdir -p "$work"; cd "$work"
x() { dpkg-deb -x "$out/debs/$1"_*.deb "$2"; }
log "unpacking kernel, headers and sources"
x "linux-image-$KVER" kernel
for p in "linux-headers-$KVER" "linux-headers-$ABI-common" linux-kbuild-6.1; do x "$p" hdr; done
# The arch headers include the common ones by absolute path; point it at the unpacked copy.
sed -i "s|include /usr/src/|include $work/hdr/usr/src/|" "hdr/usr/src/linux-headers-$KVER/Makefile"
x busybox-static bb
x linux-source-6.1 src
x v4l2loopback-dkms lb

log "building gpio-sim.ko"
mkdir gpio-sim
tar -xJf src/usr/src/linux-source-6.1.tar.xz --strip-components=1 -C gpio-sim \
  linux-source-6.1/drivers/gpio/gpio-sim.c linux-source-6.1/drivers/gpio/gpiolib.h linux-source-6.1/kernel/irq/irq_sim.c
(cd gpio-sim && mv drivers/gpio/gpio-sim.c gpio-sim-main.c && mv drivers/gpio/gpiolib.h . && mv kernel/irq/irq_sim.c .)
# irq_to_desc is not exported to modules; generic_handle_irq does the same for a simple irq.
sed -i 's/handle_simple_irq(irq_to_desc(irqnum));/generic_handle_irq(irqnum);/' gpio-sim/irq_sim.c
grep -q 'generic_handle_irq(irqnum);' gpio-sim/irq_sim.c || { log "irq_sim.c patch did not apply"; exit 1; }
printf 'obj-m += gpio-sim.o\ngpio-sim-y := gpio-sim-main.o irq_sim.o\n' > gpio-sim/Makefile
kbuild() { make -s -C "hdr/usr/src/linux-headers-$KVER" M="$work/$1" ARCH=arm64 CROSS_COMPILE=aarch64-linux-gnu- modules 2>&1 | grep -v 'Skipping BTF' >&2 || true; test -f "$1/$2"; }
kbuild gpio-sim gpio-sim.ko
log "building v4l2loopback.ko"
cp -r lb/usr/src/v4l2loopback-* loopback
kbuild loopback v4l2loopback.ko

log "assembling the initramfs"
root="$work/root"
mkdir -p "$root"/{bin,dev,proc,sys,tmp,host,lib/modules/$KVER/extra}
cp bb/bin/busybox "$root/bin/"
cp kernel/lib/modules/$KVER/modules.{order,builtin,builtin.modinfo} "$root/lib/modules/$KVER/"
depmod -b kernel "$KVER"
mods=$(modprobe -d kernel -S "$KVER" --show-depends -a vivid configfs 9p 9pnet_virtio virtio_pci virtio_mmio videobuf2_vmalloc \
  | awk '$1 == "insmod" { print $2 }' | sort -u)
for m in $mods; do
  rel="${m#"$work/kernel/"}"
  mkdir -p "$root/$(dirname "$rel")"; cp "$m" "$root/$rel"
done
cp gpio-sim/gpio-sim.ko loopback/v4l2loopback.ko "$root/lib/modules/$KVER/extra/"
depmod -b "$root" "$KVER"
# The arm64 C runtime kensa-fw links (Debian's libc6-dev-arm64-cross).
for l in ld-linux-aarch64.so.1 libc.so.6 libm.so.6 libgcc_s.so.1; do cp -L "/usr/aarch64-linux-gnu/lib/$l" "$root/lib/"; done
install -m 755 "$here/init" "$root/init"
(cd "$root" && find . | cpio -o -H newc --quiet | gzip -1) > "$out/initrd.gz"
cp "kernel/boot/vmlinuz-$KVER" "$out/Image"
rm -rf "$work"
echo "$stamp" > "$out/ready"
log "ready: $(du -h "$out/initrd.gz" | cut -f1) initramfs"
echo "$out"
