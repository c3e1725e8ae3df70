#!/usr/bin/env bash
# Builds kube-apiserver and etcd, at the versions pinned in this directory's
# go.mod, for the tests of shared/runner/kubernetes (package kubetest finds
# them in the same directory). Idempotent: when both binaries are present and
# report the pinned versions it does nothing.
#
#   bash scripts/kubebin/build.sh          # build if missing or stale
#   bash scripts/kubebin/build.sh -print   # only print the binary directory
#
# Output directory, outside any clone so that every worktree shares one build:
#   ${STROEM_KUBE_BIN_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/stroem-worker/kube-v1.36.3}
# Cold cost (about 15 CPU-minutes, 0.4 GB of modules): see README.md here.
set -euo pipefail
cd "$(dirname "$0")"

kube_version=$(awk '$1 == "k8s.io/kubernetes" && $2 ~ /^v/ {print $2; exit}' go.mod)
etcd_version=$(awk '$1 == "go.etcd.io/etcd/server/v3" && $2 ~ /^v/ {print $2; exit}' go.mod)
if [ -z "$kube_version" ] || [ -z "$etcd_version" ]; then
	echo "build.sh: cannot read pinned versions from go.mod" >&2
	exit 1
fi
# The default directory name must stay in step with kubetest.BinDir.
bin_dir=${STROEM_KUBE_BIN_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/stroem-worker/kube-$kube_version}

if [ "${1:-}" = "-print" ]; then
	echo "$bin_dir"
	exit 0
fi

# up_to_date NAME WANT: the binary exists and its --version output contains
# WANT. (Not a pipe into grep -q: with pipefail, the SIGPIPE the binary may
# get when grep stops reading early would count as a failure.)
up_to_date() {
	local out
	[ -x "$bin_dir/$1" ] && out=$("$bin_dir/$1" --version 2>/dev/null) && [[ $out == *"$2"* ]]
}
current() {
	up_to_date kube-apiserver "Kubernetes $kube_version" &&
		up_to_date etcd "etcd Version: ${etcd_version#v}"
}

if current; then
	echo "build.sh: kube-apiserver $kube_version and etcd $etcd_version already in $bin_dir"
	exit 0
fi

mkdir -p "$bin_dir"
# Two builds at once (two worktrees, or CI next to a developer) would waste
# fifteen minutes of CPU; the second one waits and then finds the binaries.
exec 9>"$bin_dir/.build.lock"
if command -v flock >/dev/null; then
	flock 9
	if current; then
		echo "build.sh: built meanwhile by another build.sh in $bin_dir"
		exit 0
	fi
fi

export CGO_ENABLED=0 GOWORK=off GOFLAGS="-mod=readonly -buildvcs=false"
start=$(date +%s)
echo "build.sh: downloading modules (about 90 MB, 0.4 GB unpacked, the first time)"
go mod download

# /version reports v0.0.0-master unless the version variables are set, and
# the server derives its default emulation version from them.
minor=${kube_version#v1.}
minor=${minor%%.*}
kube_ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$kube_version"
kube_ldflags+=" -X k8s.io/component-base/version.gitMajor=1"
kube_ldflags+=" -X k8s.io/component-base/version.gitMinor=$minor"
kube_ldflags+=" -X k8s.io/component-base/version.gitTreeState=clean"

# Build to temporary names and rename, so an interrupted build never leaves a
# binary that looks current.
echo "build.sh: building etcd $etcd_version"
go build -trimpath -ldflags "-s -w" -o "$bin_dir/etcd.tmp" ./cmd/etcd
echo "build.sh: building kube-apiserver $kube_version (10-15 minutes on 2 idle cores when cold)"
go build -trimpath -ldflags "$kube_ldflags" -o "$bin_dir/kube-apiserver.tmp" k8s.io/kubernetes/cmd/kube-apiserver
mv -f "$bin_dir/etcd.tmp" "$bin_dir/etcd"
mv -f "$bin_dir/kube-apiserver.tmp" "$bin_dir/kube-apiserver"

if ! current; then
	echo "build.sh: built binaries do not report the pinned versions" >&2
	"$bin_dir/kube-apiserver" --version >&2 || true
	"$bin_dir/etcd" --version >&2 || true
	exit 1
fi
echo "build.sh: built kube-apiserver $kube_version and etcd $etcd_version into $bin_dir in $(($(date +%s) - start)) s"
