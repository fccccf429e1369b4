#!/usr/bin/env bash
# Builds the inetd-privsep .deb from a checkout, in one command:
#
#     packaging/build-deb.sh
#
# Installs what it needs with apt-get when missing (as root), builds the
# release binaries, generates the man pages and completions, stages the
# files and builds the package with dpkg-deb. The last line printed is the
# path of the .deb. Honours CARGO_TARGET_DIR; the package goes to
# TARGET/deb/.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
export DEBIAN_FRONTEND=noninteractive

# Tools: dpkg-dev (dpkg-shlibdeps), binutils (strip), gzip.
need=()
for pair in dpkg-shlibdeps:dpkg-dev strip:binutils gzip:gzip; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || need+=("${pair#*:}")
done
if [ ${#need[@]} -gt 0 ]; then
    echo "build-deb: installing ${need[*]}" >&2
    apt-get update -qq >&2
    apt-get install -y -qq --no-install-recommends "${need[@]}" >&2
fi

target=${CARGO_TARGET_DIR:-$top/target}
case $target in /*) ;; *) target=$top/$target ;; esac
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n1)
arch=$(dpkg --print-architecture)
pkg=inetd-privsep
# Reproducible dates: the last commit's, unless the caller set one.
if [ -z "${SOURCE_DATE_EPOCH:-}" ]; then
    SOURCE_DATE_EPOCH=$(git -C "$top" log -1 --format=%ct 2>/dev/null || date +%s)
fi
export SOURCE_DATE_EPOCH

cargo build --release --locked -p inetd-core -p inetd-ctl >&2
cargo build --locked -p inetd-packaging >&2

out=$target/deb
root=$out/root
rm -rf "$root"
mkdir -p "$root/DEBIAN"
gen=$out/gen
rm -rf "$gen"
"$target/debug/inetd-gen-docs" --out "$gen" --source "$top" >/dev/null

doc=$root/usr/share/doc/$pkg
inst() { # MODE SRC DEST
    install -D -m "$1" "$2" "$root/$3"
}
inst 0755 "$target/release/inetd-core" usr/sbin/inetd-core
inst 0755 "$target/release/inetd-controller" usr/sbin/inetd-controller
inst 0755 "$target/release/inetctl" usr/bin/inetctl
strip --remove-section=.comment --remove-section=.note --strip-unneeded \
    "$root/usr/sbin/inetd-core" "$root/usr/sbin/inetd-controller" "$root/usr/bin/inetctl"

for u in inetd-core inetd-controller inetd; do
    inst 0644 "packaging/systemd/$u.service" "lib/systemd/system/$u.service"
done
inst 0644 packaging/sysusers.d/$pkg.conf usr/lib/sysusers.d/$pkg.conf
inst 0644 packaging/tmpfiles.d/$pkg.conf usr/lib/tmpfiles.d/$pkg.conf
inst 0755 packaging/debian/inetd.init etc/init.d/inetd
inst 0644 packaging/debian/inetd.conf usr/share/$pkg/inetd.conf

for page in "$gen"/man/*; do
    name=$(basename "$page")
    inst 0644 "$page" "usr/share/man/man${name##*.}/$name"
    gzip -9n "$root/usr/share/man/man${name##*.}/$name"
done
inst 0644 "$gen/completions/inetctl" usr/share/bash-completion/completions/inetctl
inst 0644 "$gen/completions/_inetctl" usr/share/zsh/vendor-completions/_inetctl
inst 0644 "$gen/completions/inetctl.fish" usr/share/fish/vendor_completions.d/inetctl.fish

inst 0644 packaging/debian/copyright "usr/share/doc/$pkg/copyright"
inst 0644 packaging/README.md "usr/share/doc/$pkg/README.packaging.md"
inst 0644 packaging/examples/inetd.conf "usr/share/doc/$pkg/examples/inetd.conf"
for f in packaging/examples/inetd-core.service.d/*.conf; do
    inst 0644 "$f" "usr/share/doc/$pkg/examples/inetd-core.service.d/$(basename "$f")"
done
{
    echo "$pkg ($version) unstable; urgency=medium"
    echo
    echo "  * Built from the inetd repository$(git -C "$top" rev-parse --short HEAD 2>/dev/null | sed 's/^/, commit /')."
    echo
    echo " -- inetd developers <inetd-privsep@example.org>  $(date -u -R -d "@$SOURCE_DATE_EPOCH")"
} >"$doc/changelog"
gzip -9n "$doc/changelog"

# Maintainer scripts and metadata.
for s in postinst prerm postrm; do
    install -m 0755 "packaging/debian/$s" "$root/DEBIAN/$s"
done
echo /etc/init.d/inetd >"$root/DEBIAN/conffiles"
chmod 0644 "$root/DEBIAN/conffiles"

# Shared-library dependencies, as dh_shlibdeps would compute them.
shl=$out/shlibs
rm -rf "$shl" && mkdir -p "$shl/debian"
printf 'Source: %s\n\nPackage: %s\nArchitecture: any\n' "$pkg" "$pkg" >"$shl/debian/control"
shlibs=$(cd "$shl" && dpkg-shlibdeps -O \
    "$root/usr/sbin/inetd-core" "$root/usr/sbin/inetd-controller" "$root/usr/bin/inetctl" \
    2>/dev/null | sed -n 's/^shlibs:Depends=//p')
[ -n "$shlibs" ] || { echo "build-deb: dpkg-shlibdeps found no dependencies" >&2; exit 1; }

(cd "$root" && find . -type f ! -path './DEBIAN/*' ! -path './etc/*' -printf '%P\0' \
    | LC_ALL=C sort -z | xargs -0 md5sum) >"$root/DEBIAN/md5sums"
chmod 0644 "$root/DEBIAN/md5sums"
size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
sed -e "s/@VERSION@/$version/" -e "s/@ARCH@/$arch/" -e "s/@SIZE@/$size/" \
    -e "s/@SHLIBS@/$shlibs/" packaging/debian/control >"$root/DEBIAN/control"
chmod 0644 "$root/DEBIAN/control"

# Everything owned by root, directories 0755, timestamps from the commit.
find "$root" -type d -exec chmod 0755 {} +
find "$root" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
deb=$out/${pkg}_${version}_${arch}.deb
dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >&2
echo "$deb"
