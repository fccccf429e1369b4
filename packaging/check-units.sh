#!/usr/bin/env bash
# Static checks of the packaged units, against the staged package tree
# that build-deb.sh leaves (default TARGET/deb/root):
#
#     packaging/check-units.sh [STAGED-ROOT]
#
# - systemd-analyze verify prints nothing at all for any unit (it exits 0
#   on unknown keys and misspelt values, so its output is what counts);
# - systemd-analyze security --offline=yes: the exposure of each unit,
#   failing above its ceiling (see packaging/README.md for the figures and
#   the settings that keep them there).
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
target=${CARGO_TARGET_DIR:-$top/target}
case $target in /*) ;; *) target=$top/$target ;; esac
staged=${1:-$target/deb/root}
[ -d "$staged/lib/systemd/system" ] || { echo "check-units: no staged package at $staged (run build-deb.sh)" >&2; exit 2; }
command -v systemd-analyze >/dev/null || { echo "check-units: FAILED: systemd-analyze is missing (apt-get install systemd)" >&2; exit 1; }

units=(inetd-core inetd-controller inetd)
# Highest acceptable exposure, in tenths (systemd-analyze's --threshold).
declare -A ceiling=([inetd-controller]=20 [inetd-core]=65 [inetd]=10)

# verify resolves dependencies and checks ExecStart= paths under --root:
# the staged files, plus the host's own units (targets, sockets) beside.
vroot=$(mktemp -d /tmp/inetd-units.XXXXXX)
trap 'rm -rf "$vroot"' EXIT
cp -a "$staged/." "$vroot/"
rm -rf "$vroot/DEBIAN"
for d in /lib/systemd/system /usr/lib/systemd/system; do
    [ -d "$d" ] && [ ! -L "$d" ] && mkdir -p "$vroot$d" && cp -an "$d/." "$vroot$d/"
done

status=0
out=$(systemd-analyze verify --man=no --root="$vroot" "${units[@]/%/.service}" 2>&1) || status=$?
if [ -n "$out" ] || [ "$status" != 0 ]; then
    echo "$out" >&2
    echo "check-units: FAILED: systemd-analyze verify (exit $status) printed the above" >&2
    exit 1
fi
echo "check-units: systemd-analyze verify: ${units[*]}: no output"

# The drop-in examples, each installed alone over the core's unit.
for ex in "$top"/packaging/examples/inetd-core.service.d/*.conf; do
    d=$vroot/etc/systemd/system/inetd-core.service.d
    mkdir -p "$d"
    cp "$ex" "$d/"
    status=0
    out=$(systemd-analyze verify --man=no --root="$vroot" inetd-core.service 2>&1) || status=$?
    rm -rf "$d"
    if [ -n "$out" ] || [ "$status" != 0 ]; then
        echo "$out" >&2
        echo "check-units: FAILED: inetd-core.service with the drop-in $(basename "$ex")" >&2
        exit 1
    fi
    echo "check-units: systemd-analyze verify: inetd-core.service with $(basename "$ex"): no output"
done

failed=0
for u in "${units[@]}"; do
    max=${ceiling[$u]}
    out=$(systemd-analyze security --offline=yes --root="$vroot" --threshold="$max" "$u.service" 2>&1) || failed=1
    score=$(sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p' <<<"$out")
    [ -n "$score" ] || { echo "$out" >&2; failed=1; }
    printf 'check-units: %s.service exposure %s (ceiling %s.%s)\n' "$u" "${score:-?}" "$((max / 10))" "$((max % 10))"
done
if [ "$failed" != 0 ]; then
    echo "check-units: FAILED: a unit's exposure is above its ceiling" >&2
    exit 1
fi
