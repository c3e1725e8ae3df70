#!/bin/sh
# Prepares the build context for scripts/deploy/Dockerfile (step 1 of 2).
# Run from the repository root on the build host:
#
#   sh scripts/deploy/docker-context.sh dist
#   docker build -f scripts/deploy/Dockerfile -t stroem-worker dist
#
# The image is FROM scratch and everything in it comes from here, so the
# build pulls nothing: it works the same with or without registry access.
# Needs Go, a CA bundle (Debian: ca-certificates) and a static busybox
# (Debian: busybox-static), whose `sh` runs the steps. Override the paths
# with CA_BUNDLE and BUSYBOX, the target with GOARCH.
set -eu
out=${1:?usage: docker-context.sh DIR}
ca=${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
bb=${BUSYBOX:-/bin/busybox}
[ -s "$ca" ] || { echo "no CA bundle at $ca: install ca-certificates or set CA_BUNDLE" >&2; exit 2; }
[ -x "$bb" ] || { echo "no busybox at $bb: install busybox-static or set BUSYBOX" >&2; exit 2; }
if ! file -L "$bb" 2>/dev/null | grep -q 'statically linked'; then
	command -v file >/dev/null && { echo "$bb is not statically linked: use busybox-static's" >&2; exit 2; }
fi

rm -rf "$out"
mkdir -p "$out/rootfs/bin" "$out/rootfs/etc/ssl/certs" "$out/rootfs/usr/local/bin" "$out/rootfs/tmp" "$out/home"
CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$out/rootfs/usr/local/bin/stroem-worker" ./cmd/stroem-worker
cp "$ca" "$out/rootfs/etc/ssl/certs/ca-certificates.crt"
cp "$bb" "$out/rootfs/bin/busybox"
# One link per applet, so scripts find sh, env, cat, sed, ... on PATH.
for applet in $("$bb" --list); do
	[ "$applet" = busybox ] || ln -sf busybox "$out/rootfs/bin/$applet"
done
printf 'root:x:0:0:root:/root:/bin/sh\nstroem:x:10001:10001:stroem-worker:/var/lib/stroem-worker:/bin/sh\n' > "$out/rootfs/etc/passwd"
printf 'root:x:0:\nstroem:x:10001:\n' > "$out/rootfs/etc/group"
chmod 1777 "$out/rootfs/tmp"
chmod -R u=rwX,go=rX "$out/rootfs/etc" "$out/rootfs/usr" "$out/rootfs/bin/busybox"
