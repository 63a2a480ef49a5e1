#!/bin/sh
# Escape attempts from inside a default minicontainer container, as root (issue #5, item 7).
#
# Runs under busybox sh as the container's command (pid 1). Prints one line per attempt,
#     ATTEMPT <name> <blocked|ESCAPED> <detail>
# then "DONE", and exits 0 whatever happened: tests/test_escape.py asserts each line, and
# checks on the host that nothing changed there. What the test passes in the environment:
#     HOST_DISK     MAJOR:MINOR of the host's disk (from its /proc/partitions)
#     HOST_NS       the host's namespace ids for the namespaces the container unshares,
#                   e.g. "mnt:[4026531841] net:[4026531840]"
#     HOST_MARK     a word that only a host mount's line in /proc/PID/mountinfo has
#     VICTIM_MARK   a word in the command line of another container's process
#     ONLY          if set, only these attempts (names separated by spaces) are reported
# Nothing here writes to a device: the disk is only read, and only if the open worked.

PATH=/bin:/sbin:/usr/bin:/usr/sbin
export PATH

oneline() {
    tr '\n\t' '  ' | cut -c1-200
}

wanted() {  # $ONLY (names, space-separated) runs just those attempts
    [ -z "$ONLY" ] && return 0
    case " $ONLY " in
        *" $1 "*) return 0 ;;
    esac
    return 1
}

report() {  # report NAME ESCAPED|blocked DETAIL
    wanted "$1" || return 0
    echo "ATTEMPT $1 $2 ${3:-(no output)}"
}

# try NAME CMD...: CMD is the attack, and its success (exit status 0) is an escape.
try() {
    name=$1
    shift
    wanted "$name" || return 0
    out=$("$@" 2>&1 </dev/null)
    rc=$?
    detail="rc=$rc $(printf '%s' "$out" | oneline)"
    if [ "$rc" -eq 0 ]; then
        report "$name" ESCAPED "$detail"
    else
        report "$name" blocked "$detail"
    fi
}

# check NAME CMD...: CMD looks for a leak and prints what it found; found = escape.
check() {
    name=$1
    shift
    wanted "$name" || return 0
    found=$("$@" 2>&1 </dev/null | oneline)
    if [ -n "$found" ]; then
        report "$name" ESCAPED "$found"
    else
        report "$name" blocked "nothing found"
    fi
}

mkdir -p /tmp/m /tmp/pr/old

# The container's own cgroup: on v1 (and hybrid) a bind of its directory in each hierarchy,
# on v2 /sys/fs/cgroup itself (docker-like containers get a cgroup namespace there).
if [ -e /sys/fs/cgroup/cgroup.controllers ]; then
    cgroup_v2=yes
    cgroup_memory=/sys/fs/cgroup
else
    cgroup_v2=
    cgroup_memory=/sys/fs/cgroup/memory
fi

# ---- mount: new filesystems, binds, remounts, unmounting masks ----
try mount_tmpfs mount -t tmpfs evil /tmp/m
try mount_bind mount -o bind / /tmp/m
try mount_proc mount -t proc proc /tmp/m
try mount_sysfs mount -t sysfs sysfs /tmp/m
try mount_cgroup_v1 mount -t cgroup -o memory cgroup /tmp/m
try remount_sys_rw mount -o remount,rw /sys
try remount_proc_sys_rw mount -o remount,rw /proc/sys
try remount_cgroup_rw mount -o remount,rw $cgroup_memory
try umount_masked_path umount /proc/timer_list
try umount_readonly_proc_sys umount -l /proc/sys

# ---- namespaces: new ones, and joining others ----
try unshare_mount unshare -m true
try unshare_user unshare -U true
try unshare_user_map_root unshare -U -r true
try unshare_net unshare -n true
try unshare_pid unshare -p -f true
try setns_mnt_of_pid1 nsenter -t 1 -m true
try setns_net_of_pid1 nsenter --net=/proc/1/ns/net true

host_ns_reachable() {
    for link in /proc/[0-9]*/ns/* /proc/self/ns/*; do
        id=$(readlink "$link" 2>/dev/null) || continue
        for host in $HOST_NS; do
            [ "$id" = "$host" ] && echo "$link=$id"
        done
    done
}
if [ -n "$HOST_NS" ]; then
    check setns_host_namespace_reachable host_ns_reachable
else
    report setns_host_namespace_reachable ESCAPED "HOST_NS not given: nothing checked"
fi

try pivot_root pivot_root /tmp/pr /tmp/pr/old

# ---- /proc and /sys knobs of the host ----
try write_proc_sys_hostname sh -c 'echo evil-escape > /proc/sys/kernel/hostname'
try write_proc_sys_drop_caches sh -c 'echo 3 > /proc/sys/vm/drop_caches'
try write_proc_sys_core_pattern sh -c 'echo "|/tmp/evil" > /proc/sys/kernel/core_pattern'
try sysctl_write sysctl -w vm.swappiness=0
try write_sys_uevent_helper sh -c 'echo /tmp/evil > /sys/kernel/uevent_helper'

if [ -e /proc/sysrq-trigger ]; then
    try write_sysrq_trigger sh -c 'echo h > /proc/sysrq-trigger'
else
    report write_sysrq_trigger blocked "absent (kernel without it)"
fi

read_kcore() {
    n=$(head -c 4096 /proc/kcore 2>/dev/null | wc -c)
    [ "$n" -gt 0 ] && echo "read $n bytes of /proc/kcore"
}
if [ -e /proc/kcore ]; then
    check read_proc_kcore read_kcore
else
    report read_proc_kcore blocked "absent (masked, or the kernel has none)"
fi
try read_kernel_log dmesg

# ---- kernel modules ----
printf '\177ELF evil module' > /tmp/evil.ko
try insmod insmod /tmp/evil.ko
try rmmod rmmod loop

# ---- devices: a node for the host's disk and memory, then using it ----
disk_attack() {  # disk_attack NODE MAJOR MINOR
    rm -f "$1"
    mknod "$1" b "$2" "$3" 2>/dev/null
    dd if="$1" of=/dev/null bs=512 count=1
}
dev_attack() {  # dev_attack NODE MAJOR MINOR
    rm -f "$1"
    mknod "$1" c "$2" "$3" 2>/dev/null
    timeout 5 dd if="$1" of=/dev/null bs=1 count=1
}
if [ -n "$HOST_DISK" ]; then
    try blockdev_host_disk_in_dev disk_attack /dev/hostdisk "${HOST_DISK%:*}" "${HOST_DISK#*:}"
    try blockdev_host_disk_in_tmp disk_attack /tmp/hostdisk "${HOST_DISK%:*}" "${HOST_DISK#*:}"
else
    report blockdev_host_disk_in_dev ESCAPED "HOST_DISK not given: nothing checked"
    report blockdev_host_disk_in_tmp ESCAPED "HOST_DISK not given: nothing checked"
fi
try blockdev_sda disk_attack /dev/sda 8 0
try blockdev_vda disk_attack /dev/vda 254 0
try chardev_mem dev_attack /dev/mem 1 1
try chardev_kmsg dev_attack /dev/kmsg 1 11

# ---- the cgroup filesystem ----
release_agents() {
    for f in /sys/fs/cgroup/*/release_agent /sys/fs/cgroup/release_agent; do
        [ -e "$f" ] || continue
        (echo /tmp/evil > "$f") 2>/dev/null && echo "wrote $f"
    done
}
check cgroup_release_agent release_agents
try cgroup_mkdir mkdir $cgroup_memory/evil
if [ -n "$cgroup_v2" ]; then
    # v2 has no release agent, and devices are allowed by an eBPF program, not a file
    report cgroup_notify_on_release blocked "absent (cgroup v2 has no notify_on_release)"
    report cgroup_devices_allow blocked "absent (cgroup v2 has no devices.allow)"
    try cgroup_memory_limit sh -c 'echo max > /sys/fs/cgroup/memory.max'
else
    try cgroup_notify_on_release sh -c 'echo 1 > /sys/fs/cgroup/memory/notify_on_release'
    try cgroup_devices_allow sh -c 'echo a > /sys/fs/cgroup/devices/devices.allow'
    try cgroup_memory_limit sh -c 'echo -1 > /sys/fs/cgroup/memory/memory.limit_in_bytes'
fi

# ---- other processes: another uid's in this container, another container's ----
su -s /bin/sh user -c 'exec sleep 300' &
other=$!
i=0
while [ "$(stat -c %u /proc/$other 2>/dev/null)" != 1000 ] && [ $i -lt 100 ]; do
    sleep 0.05
    i=$((i + 1))
done
try ptrace_other_uid_mem sh -c "exec 3</proc/$other/mem"
try ptrace_other_uid_environ cat /proc/$other/environ
kill "$other" 2>/dev/null
wait "$other" 2>/dev/null

other_container() {
    for f in /proc/[0-9]*/cmdline; do
        cmd=$(tr '\0' ' ' < "$f" 2>/dev/null)
        case "$cmd" in
            *"$VICTIM_MARK"*) echo "$f: $cmd" ;;
        esac
    done
}
if [ -n "$VICTIM_MARK" ]; then
    check ptrace_other_container_visible other_container
else
    report ptrace_other_container_visible ESCAPED "VICTIM_MARK not given: nothing checked"
fi

# ---- reboot, hostname, time ----
try reboot reboot -f
try halt halt -f
try poweroff poweroff -f
try sethostname hostname evil-escape
settime_date() {  # busybox's date -s says it could not, then exits 0: look at the clock
    date -s "2001-02-03 04:05:06" 2>&1
    [ "$(date +%Y)" = 2001 ]
}
try settime_date settime_date
try settime_adjtimex adjtimex -o 100000

# ---- what must not be visible: the host's pids, mounts, network interfaces ----
host_pids() {
    [ "$$" = 1 ] || echo "the suite's shell is pid $$, not 1"
    n=0
    for p in /proc/[0-9]*; do
        n=$((n + 1))
    done
    [ "$n" -lt 10 ] || echo "$n pids: $(ls -d /proc/[0-9]* | tr '\n' ' ')"
}
check host_pids_visible host_pids

host_mounts() {
    while read -r _ _ _ _ mp rest; do
        case "$mp" in
            /|/proc|/proc/*|/dev|/dev/*|/sys|/sys/*) ;;
            *) echo "mount point $mp" ;;
        esac
    done < /proc/self/mountinfo
    if [ -n "$HOST_MARK" ] && grep -q "$HOST_MARK" /proc/self/mountinfo /proc/1/mountinfo; then
        echo "the host's mount $HOST_MARK"
    fi
}
check host_mounts_visible host_mounts

host_netifs() {
    for i in /sys/class/net/*; do
        [ "${i##*/}" = lo ] || echo "interface ${i##*/}"
    done
    ip -o link | grep -v ': lo: ' | cut -d: -f2
}
check host_network_visible host_netifs

echo DONE
exit 0
