#!/usr/bin/env bash
# Builds a container image for one of our binaries from scratch, without a registry or a Docker
# engine: buildah (vfs storage, chroot isolation) copies the release binary, the shared libraries
# it links (found with ldd) and a passwd entry for the non-root user, and writes an OCI archive.
#
# Usage: images/build.sh NAME BINARY OUT.tar
#   NAME    image name, e.g. modelfleet-runtime (tagged localhost/NAME:VERSION)
#   BINARY  path of the release binary
#   OUT     OCI archive to write
set -euo pipefail

name=$1 binary=$2 out=$3
version=${VERSION:-0.1.0}
uid=65532

command -v buildah >/dev/null || {
  echo "installing buildah (Debian) to build images without a Docker engine"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq buildah) >/dev/null
}
export STORAGE_DRIVER=vfs BUILDAH_ISOLATION=chroot
root=$(mktemp -d)
trap 'rm -rf "$root"; [ -n "${ctr:-}" ] && buildah rm "$ctr" >/dev/null 2>&1 || true' EXIT

# The binary and exactly the libraries it needs, at the paths the loader looks them up at.
install -D -m 0755 "$binary" "$root/usr/local/bin/$name"
ldd "$binary" | awk '/=> \// {print $3} /^[[:space:]]*\/lib/ {print $1}' | sort -u | while read -r lib; do
  install -D -m 0644 "$lib" "$root$lib"
done
# The dynamic loader keeps its execute bit.
for ld in "$root"/lib64/ld-linux-*.so.* "$root"/lib/x86_64-linux-gnu/ld-linux-*.so.*; do
  [ -e "$ld" ] && chmod 0755 "$ld"
done
# CA certificates for https:// model stores; a passwd entry so the user has a name.
if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
  install -D -m 0644 /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
fi
install -d "$root/etc" "$root/tmp"
chmod 1777 "$root/tmp"
printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:%s:%s:nonroot:/home/nonroot:/sbin/nologin\n' "$uid" "$uid" > "$root/etc/passwd"
printf 'root:x:0:\nnonroot:x:%s:\n' "$uid" > "$root/etc/group"

ctr=$(buildah from scratch)
buildah copy --quiet "$ctr" "$root" / >/dev/null
buildah config \
  --user "$uid:$uid" \
  --entrypoint "[\"/usr/local/bin/$name\"]" \
  --env SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
  --label org.opencontainers.image.title="$name" \
  --label org.opencontainers.image.version="$version" \
  --label org.opencontainers.image.licenses=Apache-2.0 \
  "$ctr"
# Prove the image holds everything the binary needs: run it inside the image's own root.
buildah run --isolation chroot "$ctr" -- "/usr/local/bin/$name" --version

mkdir -p "$(dirname "$out")"
rm -f "$out"
buildah commit --quiet "$ctr" "localhost/$name:$version" >/dev/null
buildah push --quiet "localhost/$name:$version" "oci-archive:$out:localhost/$name:$version"
echo "$out: $(du -h "$out" | cut -f1) (localhost/$name:$version, user $uid)"
