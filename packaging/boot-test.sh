#!/usr/bin/env bash
# Boots Debian bookworm under a real systemd and checks the package there:
#
#     packaging/boot-test.sh target/deb/inetd-privsep_VERSION_ARCH.deb
#
# A minbase root file system is made with debootstrap once and cached as a
# tarball (INETD_BOOT_CACHE, default /var/cache/inetd-boot-test; remade
# after a week), unpacked on a tmpfs for each run, and booted with
# systemd-nspawn in a network namespace of its own, so its loopback ports
# are its own. Then, inside: dpkg -i; both services run as their users with
# the expected capabilities; a service enabled in /etc/inetd.conf answers
# after `systemctl reload inetd-controller` and `inetctl list` shows it;
# /etc/hosts.deny, then /etc/hosts.allow, read by the sandboxed controller,
# refuse and then admit its client again; an entry added with update-inetd
# answers after its reload (and, being a root builtin, runs as nobody), and
# one removed with it goes; `systemctl
# restart inetd-controller` keeps the listening socket (same inode, same
# core); `systemctl stop inetd-core` stops both cleanly; `dpkg --purge`
# leaves nothing behind. Any failure prints the services' journal and exits
# 1. Needs root; as anyone else it says why it skips and exits 0.
set -euo pipefail

say() { echo "boot-test: $*"; }
passed=0
check_passed() { passed=$((passed + 1)); say "$*"; }

if [ "$(id -u)" != 0 ]; then
    # As the test harness does: where every test must run, a skip fails.
    if [ "${INETD_TEST_STRICT:-}" = 1 ]; then
        echo "boot-test: FAILED: needs root (INETD_TEST_STRICT=1 makes a skip a failure)" >&2
        exit 1
    fi
    say "skipped: needs root (debootstrap, systemd-nspawn, network namespaces)"
    exit 0
fi
[ $# -eq 1 ] && [ -f "$1" ] || { echo "usage: $0 PACKAGE.deb" >&2; exit 2; }
deb=$(realpath "$1")
for tool in debootstrap systemd-nspawn nsenter ip zstd tar; do
    command -v "$tool" >/dev/null || {
        echo "boot-test: FAILED: $tool is missing (apt-get install systemd-container debootstrap iproute2 zstd)" >&2
        exit 1
    }
done
started=$(date +%s)

# --- The cached root file system -------------------------------------------
cache=${INETD_BOOT_CACHE:-/var/cache/inetd-boot-test}
tarball=$cache/bookworm-minbase.tar.zst
mkdir -p "$cache"
if [ ! -s "$tarball" ] || [ -n "$(find "$tarball" -mtime +7)" ]; then
    say "making the bookworm minbase root file system (debootstrap, once)"
    # The host's own Debian mirror, as apt is set up here; else
    # debootstrap's default.
    mirror=$( (grep -hs '^URIs:' /etc/apt/sources.list.d/*.sources | awk '{print $2}';
               grep -hs '^deb ' /etc/apt/sources.list | awk '{print $2}') \
              | grep -v -- '-security' | head -n1 || true)
    build=$(mktemp -d /tmp/inetd-debootstrap.XXXXXX)
    mount -t tmpfs -o mode=0755 tmpfs "$build"
    if ! debootstrap --variant=minbase --include=systemd-sysv,netbase,update-inetd \
        bookworm "$build" ${mirror:+"$mirror"} >"$cache/debootstrap.log" 2>&1; then
        tail -n 30 "$cache/debootstrap.log" >&2
        umount "$build"; rmdir "$build"
        echo "boot-test: FAILED: debootstrap" >&2
        exit 1
    fi
    tar -C "$build" --numeric-owner --xattrs -c . | zstd -q -T0 -o "$tarball.new"
    mv "$tarball.new" "$tarball"
    umount "$build"; rmdir "$build"
fi

# --- Boot -----------------------------------------------------------------
id=inetd-boot-$$
work=$(mktemp -d /tmp/inetd-boot.XXXXXX)
root=$work/root
nspawn=
leader=
cgroups=()

cleanup() {
    set +e
    if [ -n "$nspawn" ] && kill -0 "$nspawn" 2>/dev/null; then
        kill -TERM "$nspawn"
        for _ in $(seq 100); do kill -0 "$nspawn" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$nspawn" 2>/dev/null
        wait "$nspawn" 2>/dev/null
    fi
    mountpoint -q "$work" && umount -l "$work"
    rmdir "$work" 2>/dev/null
    ip netns del "$id" 2>/dev/null
    # nspawn leaves payload/ and supervisor/ below the cgroup it ran in.
    for cg in "${cgroups[@]}"; do
        [ -d "$cg" ] && find "$cg" -depth -type d -exec rmdir {} + 2>/dev/null
    done
}
trap cleanup EXIT

mount -t tmpfs -o mode=0755 tmpfs "$work"
mkdir "$root"
zstd -q -d -c "$tarball" | tar -C "$root" --numeric-owner --xattrs -xpf -
cp "$deb" "$root/root/"
pkgfile=/root/$(basename "$deb")

ip netns add "$id"
ip netns exec "$id" ip link set lo up

# nspawn runs in a cgroup of this script's own, removed afterwards: the
# systemd hierarchy (cgroup v2, or name=systemd and unified on a hybrid
# host).
if [ "$(stat -fc %T /sys/fs/cgroup)" = cgroup2fs ]; then
    cgroups=("/sys/fs/cgroup/$id")
else
    for h in systemd unified; do
        [ -d "/sys/fs/cgroup/$h" ] && cgroups+=("/sys/fs/cgroup/$h/$id")
    done
fi
for cg in "${cgroups[@]}"; do mkdir "$cg"; done
say "booting systemd (nspawn, network namespace $id)"
(
    for cg in "${cgroups[@]}"; do echo "$BASHPID" >"$cg/cgroup.procs"; done
    exec systemd-nspawn -q -D "$root" -b --register=no --keep-unit --console=read-only \
        --network-namespace-path="/run/netns/$id" -- systemd.firstboot=off
) >"$work/console.log" 2>&1 </dev/null &
nspawn=$!

# The container's pid 1, as the host sees it: the process of its init.scope.
for _ in $(seq 300); do
    kill -0 "$nspawn" 2>/dev/null || { cat "$work/console.log" >&2; echo "boot-test: FAILED: nspawn exited" >&2; exit 1; }
    f=$(find "${cgroups[0]}/payload" -path '*/init.scope/cgroup.procs' 2>/dev/null | head -n1 || true)
    # (cgroup files have no size: read them.)
    [ -n "$f" ] && leader=$(head -n1 "$f")
    [ -n "$leader" ] && break
    sleep 0.1
done
[ -n "$leader" ] || { tail -n 30 "$work/console.log" >&2; echo "boot-test: FAILED: no init in the container" >&2; exit 1; }

in_c() { nsenter -t "$leader" -m -u -i -p -C -n -- "$@"; }
in_net() { nsenter -t "$leader" -n -- "$@"; }

fail() {
    echo "boot-test: FAILED: $*" >&2
    in_c journalctl --no-pager -n 100 -u inetd-core -u inetd-controller -u inetd >&2 || true
    exit 1
}

# poll SECONDS WHAT COMMAND...: until COMMAND succeeds, or fail.
poll() {
    local secs=$1 what=$2
    shift 2
    local end=$(($(date +%s) + secs))
    until "$@" >/dev/null 2>&1; do
        [ "$(date +%s)" -lt "$end" ] || fail "timed out after ${secs}s: $what"
        sleep 0.1
    done
}

running() {
    local s
    s=$(in_c systemctl is-system-running 2>/dev/null || true)
    [ "$s" = running ]
}
poll 60 "the container's systemd reaching 'running'" running
say "booted in $(($(date +%s) - started))s (root file system included)"

# A line sent to the echo service on 127.0.0.1:PORT comes back.
echoes() {
    in_net timeout 5 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1" && printf "boot-test\n" >&3 &&
        IFS= read -r -t 4 line <&3 && [ "$line" = boot-test ]' _ "$1"
}
# The daytime service on 127.0.0.1:PORT answers a line.
tells_time() {
    in_net timeout 5 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1" && IFS= read -r -t 4 line <&3 &&
        [ -n "$line" ]' _ "$1"
}
refuses() {
    ! in_net timeout 5 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1"' _ "$1" 2>/dev/null
}
# The connection to 127.0.0.1:PORT is made, and closed without an echo
# (what an access list's refusal looks like to a client).
closes_at_once() { ! echoes "$1"; }
# The inode of the IPv4 socket listening on PORT (from the container's
# network namespace, as the host sees it).
listen_inode() {
    awk -v p="$(printf ':%04X' "$1")" '$2 ~ p"$" && $4 == "0A" { print $10; exit }' "/proc/$leader/net/tcp"
}
main_pid() { in_c systemctl show -p MainPID --value "$1"; }
status_field() { in_c awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status"; }
uid_line() { in_c awk '$1 == "Uid:" { print $2, $3, $4, $5 }' "/proc/$1/status"; }

# What the root file system holds before the package: compared after purge.
snapshot() {
    in_c sh -c 'find / -xdev \( -path /proc -o -path /sys -o -path /dev -o -path /run \
        -o -path /tmp -o -path /var/tmp -o -path /var/log -o -path /var/cache -o -path /var/lib/dpkg \
        -o -path /root \) -prune -o -print | LC_ALL=C sort;
        sha256sum /etc/passwd /etc/group /etc/shadow /etc/gshadow'
}
snapshot >"$work/before"

# --- Install ----------------------------------------------------------------
say "dpkg -i $(basename "$deb")"
in_c env DEBIAN_FRONTEND=noninteractive dpkg -i "$pkgfile" >"$work/dpkg.log" 2>&1 ||
    { cat "$work/dpkg.log" >&2; fail "dpkg -i"; }
for u in inetd-core inetd-controller; do
    [ "$(in_c systemctl is-active "$u")" = active ] || fail "$u is not active after install"
    [ "$(in_c systemctl is-enabled "$u")" = enabled ] || fail "$u is not enabled"
done
in_c test -f /etc/inetd.conf || fail "/etc/inetd.conf was not created"
in_c cmp -s /etc/inetd.conf /usr/share/inetd-privsep/inetd.conf || fail "/etc/inetd.conf is not the default"
in_c dpkg-query -W -f='${Conffiles}\n' inetd-privsep | grep -q /etc/inetd.conf &&
    fail "/etc/inetd.conf is a conffile"
check_passed "installed: both services enabled and active, /etc/inetd.conf created (not a conffile)"

# --- Who runs as what ---------------------------------------------------------
core=$(main_pid inetd-core)
ctl=$(main_pid inetd-controller)
inetd_uid=$(in_c id -u inetd)
[ "$(uid_line "$core")" = "0 0 0 0" ] || fail "inetd-core is not root: $(uid_line "$core")"
[ "$(uid_line "$ctl")" = "$inetd_uid $inetd_uid $inetd_uid $inetd_uid" ] ||
    fail "inetd-controller does not run as inetd ($inetd_uid): $(uid_line "$ctl")"
# CAP_KILL (5), CAP_SETGID (6), CAP_SETUID (7), CAP_NET_BIND_SERVICE (10).
for f in CapPrm CapEff CapBnd; do
    [ "$(status_field "$core" $f)" = 00000000000004e0 ] ||
        fail "inetd-core $f is $(status_field "$core" $f), not the four capabilities"
done
for f in CapInh CapAmb; do
    [ "$(status_field "$core" $f)" = 0000000000000000 ] || fail "inetd-core $f is not empty"
done
for f in CapPrm CapEff CapBnd CapInh CapAmb; do
    [ "$(status_field "$ctl" $f)" = 0000000000000000 ] ||
        fail "inetd-controller $f is $(status_field "$ctl" $f), not empty"
done
[ "$(status_field "$ctl" NoNewPrivs)" = 1 ] || fail "inetd-controller may gain privileges"
[ "$(in_c stat -c '%U %a' /run/inetd/control)" = "inetd 755" ] || fail "/run/inetd/control"
[ "$(in_c stat -c '%U %a' /run/inetd/sockets)" = "root 755" ] || fail "/run/inetd/sockets"
check_passed "inetd-core: root, capabilities 0x4e0; inetd-controller: uid $inetd_uid, none"

# --- A service from inetd.conf, after systemctl reload -------------------------
in_c sed -i 's/^#echo\(\t*\)stream/echo\1stream/' /etc/inetd.conf
in_c systemctl reload inetd-controller || fail "systemctl reload inetd-controller"
poll 10 "echo answering on port 7" echoes 7
in_c inetctl list >"$work/list" || fail "inetctl list"
grep -Eq '^echo +0\.0\.0\.0 +7 +tcp4 +nobody:nogroup +listening' "$work/list" ||
    { cat "$work/list" >&2; fail "inetctl list does not show echo listening"; }
check_passed "echo (from /etc/inetd.conf) answers after systemctl reload; inetctl list shows it"

# --- hosts.deny and hosts.allow, read by the controller in its sandbox ---------
# hosts.deny refuses echo to everyone, so the core closes the connection
# before fork; hosts.allow then admits 127.0.0.1 again. Each step shows the
# controller (user inetd, ProtectSystem=strict) read that file: one it could
# not read would fail the reload. Files the system had are put back after.
for f in hosts.allow hosts.deny; do
    if in_c test -e "/etc/$f"; then in_c cp -p "/etc/$f" "/root/$f.orig"; fi
done
in_c sh -c 'printf "echo: ALL\n" >/etc/hosts.deny && chmod 0644 /etc/hosts.deny'
in_c systemctl reload inetd-controller || fail "systemctl reload inetd-controller with /etc/hosts.deny"
poll 10 "echo refused by /etc/hosts.deny" closes_at_once 7
in_c inetctl list >"$work/list" || fail "inetctl list"
grep -Eq '^    refused: access list [1-9]' "$work/list" ||
    { cat "$work/list" >&2; fail "inetctl list does not count the access list's refusals"; }
in_c sh -c 'printf "echo: 127.0.0.1\n" >/etc/hosts.allow && chmod 0644 /etc/hosts.allow'
in_c systemctl reload inetd-controller || fail "systemctl reload inetd-controller with /etc/hosts.allow"
poll 10 "echo admitted by /etc/hosts.allow" echoes 7
for f in hosts.allow hosts.deny; do
    if in_c test -e "/root/$f.orig"; then
        in_c mv "/root/$f.orig" "/etc/$f"
    else
        in_c rm -f "/etc/$f"
    fi
done
in_c systemctl reload inetd-controller || fail "systemctl reload inetd-controller (access files restored)"
echoes 7 || fail "echo does not answer with the access files restored"
check_passed "/etc/hosts.deny refuses echo before fork, /etc/hosts.allow admits it again: both read under the sandbox"

# --- update-inetd: add (a restart of "inetd"), remove (a force-reload) ---------
# As a package registers a builtin: as root (it runs as nobody). A numeric
# service, since update-inetd leaves alone a service whose name is
# commented out in the file (the default's "#daytime" lines).
inode=$(listen_inode 7)
[ -n "$inode" ] || fail "no listener on port 7"
tab=$(printf '\t')
in_c env DEBIAN_FRONTEND=noninteractive update-inetd --add \
    "8013${tab}stream${tab}tcp${tab}nowait${tab}root${tab}internal${tab}daytime" ||
    fail "update-inetd --add"
poll 10 "daytime (added by update-inetd) answering on port 8013" tells_time 8013
in_c inetctl list >"$work/list" || fail "inetctl list"
grep -Eq '^8013 +0\.0\.0\.0 +8013 +tcp4 +nobody:nogroup +listening' "$work/list" &&
    grep -q 'warning: runs as nobody:nogroup, not root:root: builtins need no privilege' "$work/list" ||
    { cat "$work/list" >&2; fail "the root builtin from update-inetd does not run as nobody with a note"; }
[ "$(main_pid inetd-core)" = "$core" ] || fail "update-inetd restarted the core"
[ "$(listen_inode 7)" = "$inode" ] || fail "update-inetd replaced the echo listener"
in_c env DEBIAN_FRONTEND=noninteractive update-inetd --remove 8013 || fail "update-inetd --remove"
poll 10 "daytime gone after update-inetd --remove" refuses 8013
check_passed "update-inetd --add answers after its reload (as nobody), --remove goes; the core was not restarted"

# --- systemctl restart inetd-controller keeps every listener --------------------
in_c systemctl restart inetd-controller || fail "systemctl restart inetd-controller"
[ "$(main_pid inetd-controller)" != "$ctl" ] || fail "the controller was not restarted"
[ "$(main_pid inetd-core)" = "$core" ] || fail "restarting the controller restarted the core"
[ "$(listen_inode 7)" = "$inode" ] || fail "restarting the controller replaced the listening socket"
in_c sh -c "ls -l /proc/$core/fd | grep -q 'socket:\[$inode\]'" || fail "the core no longer holds the listener"
echoes 7 || fail "echo does not answer after the controller's restart"
check_passed "systemctl restart inetd-controller: same socket (inode $inode), same core"

# --- systemctl stop inetd-core stops both, cleanly ------------------------------
in_c systemctl stop inetd-core || fail "systemctl stop inetd-core"
for u in inetd-core inetd-controller; do
    [ "$(in_c systemctl is-active "$u" || true)" = inactive ] || fail "$u is still active"
    [ "$(in_c systemctl show -p Result --value "$u")" = success ] || fail "$u did not stop cleanly"
done
[ "$(in_c systemctl show -p ExecMainStatus --value inetd-core)" = 0 ] || fail "inetd-core exited non-zero"
refuses 7 || fail "port 7 still answers after the core stopped"
in_c test ! -e /run/inetd/core.sock || fail "the core socket was left behind"
check_passed "systemctl stop inetd-core: both inactive, exit 0, listeners closed"

# --- dpkg --purge leaves nothing behind -------------------------------------------
# No active entry left (update-inetd's went above): purge then removes the
# file it created, as Debian's other inetds do.
in_c sed -i 's/^echo\(\t*\)stream/#echo\1stream/' /etc/inetd.conf
in_c env DEBIAN_FRONTEND=noninteractive dpkg --purge inetd-privsep >"$work/purge.log" 2>&1 ||
    { cat "$work/purge.log" >&2; fail "dpkg --purge"; }
snapshot >"$work/after"
if ! diff -u "$work/before" "$work/after" >"$work/diff"; then
    cat "$work/diff" >&2
    fail "dpkg --purge left something behind"
fi
in_c test ! -e /run/inetd || fail "/run/inetd was left behind"
in_c getent passwd inetd >/dev/null && fail "user inetd was left behind"
in_c sh -c 'for s in /proc/[0-9]*/status; do
    awk -v u="$1" '"'"'$1 == "Uid:" && $2 == u { f = 1 } END { exit !f }'"'"' "$s" 2>/dev/null && exit 0
done; exit 1' _ "$inetd_uid" && fail "processes of uid $inetd_uid are left"
check_passed "dpkg --purge: nothing left behind"

say "done in $(($(date +%s) - started))s"
echo "boot-test: $passed passed, 0 failed"
