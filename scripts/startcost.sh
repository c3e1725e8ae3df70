#!/usr/bin/env bash
# Prints what starting and exiting a process costs on this machine (CPU and
# page faults, perf stat over 50 runs): /bin/true, an empty Go program, a
# lean Go program linking only net/http, encoding/json and os/exec (the
# floor of a per-step child that links only what a local step needs), and
# `stroem-worker version` built as scripts/deploy builds it, with and
# without the Kubernetes runner. Needs perf (Debian: linux-perf).
# Usage: bash scripts/startcost.sh
set -euo pipefail
cd "$(dirname "$0")/.."
command -v perf >/dev/null || { echo "startcost: needs perf (apt-get install linux-perf)" >&2; exit 2; }
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
mkdir -p "$dir/empty" "$dir/lean"
printf 'package main\n\nfunc main() {}\n' >"$dir/empty/main.go"
cat >"$dir/lean/main.go" <<'GO'
package main

import (
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
)

func main() {
	_ = json.Valid([]byte("{}"))
	_ = http.DefaultClient
	_ = exec.Command
	os.Exit(0)
}
GO
for m in empty lean; do
  printf 'module %s\n\ngo 1.26\n' "$m" >"$dir/$m/go.mod"
  (cd "$dir/$m" && CGO_ENABLED=0 go build -trimpath -o "$dir/bin-$m" .)
done
CGO_ENABLED=0 go build -trimpath -o "$dir/bin-worker" ./cmd/stroem-worker
CGO_ENABLED=0 go build -trimpath -tags nokubernetes -o "$dir/bin-worker-nokube" ./cmd/stroem-worker
printf '%-40s %10s %12s\n' "program" "CPU (ms)" "page faults"
for p in "/bin/true" "$dir/bin-empty" "$dir/bin-lean" "$dir/bin-worker version" "$dir/bin-worker-nokube version"; do
  out=$(perf stat -r 50 -x, -e task-clock,page-faults $p 2>&1 >/dev/null)
  cpu=$(echo "$out" | awk -F, '/task-clock/ {printf "%.2f", $1}')
  pf=$(echo "$out" | awk -F, '/page-faults/ {printf "%d", $1}')
  name=${p#"$dir/bin-"}
  printf '%-40s %10s %12s\n' "$name" "$cpu" "$pf"
done
