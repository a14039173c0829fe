#!/bin/busybox sh
# /init of antrieb's initramfs: load the virtio drivers, mount /dev/vda, hand over to
# systemd. Nobody sits at this console: never drop to a shell (it would hang the boot
# until the host's timeout); print a marker the host can grep for and power off.
B=/bin/busybox
$B mount -t proc proc /proc
$B mount -t sysfs sys /sys
$B mount -t devtmpfs dev /dev

fail() {
    echo "$1"
    $B cat /proc/partitions
    $B poweroff -f
    $B sleep 5  # poweroff -f returns only if it failed; the host's timeout takes over
    exit 1
}

# Probe boot (antrieb.probe on the command line): the host only wants to know whether
# this accelerator runs a guest at all, so answer before anything slow happens.
case " $($B cat /proc/cmdline) " in
    *" antrieb.probe "*)
        echo "ANTRIEB-PROBE-OK"
        $B poweroff -f
        $B sleep 5
        exit 0 ;;
esac

# Listed in dependency order when the initramfs was built.
while read -r mod; do
    $B insmod "/lib/modules/$mod" || echo "antrieb initramfs: insmod $mod failed"
done < /etc/antrieb-modules

$B mkdir -p /newroot
# virtio-blk probes asynchronously: give /dev/vda a moment to appear.
tries=0
until $B mount -t ext4 -o rw /dev/vda /newroot 2>/dev/null; do
    tries=$((tries + 1))
    [ "$tries" -ge 50 ] && fail "ANTRIEB-ROOT-MOUNT-FAILED: cannot mount /dev/vda (ext4)"
    $B sleep 0.1
done

# /sbin/init is usually an absolute symlink, which only resolves after switch_root.
[ -e /newroot/sbin/init ] || [ -L /newroot/sbin/init ] ||
    fail "ANTRIEB-ROOT-MOUNT-FAILED: no /sbin/init on /dev/vda"
for fs in dev proc sys; do
    $B mkdir -p "/newroot/$fs"
    $B mount --move "/$fs" "/newroot/$fs"
done
exec $B switch_root /newroot /sbin/init
