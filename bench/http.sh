#!/usr/bin/env bash
# HTTP benchmark of the release binary: requests/s and p50/p99 latency (wrk) of /healthz and of
# region pages, and the byte size of each page (plain and gzip). Prints figures; asserts nothing.
#
#   bench/http.sh [DURATION_SECONDS] [CONNECTIONS]
#
# Loopback only; the server and wrk share the machine's cores, so figures are a lower bound.
set -euo pipefail
cd "$(dirname "$0")/.."
duration=${1:-10}
conns=${2:-64}

command -v wrk >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; }
cargo build --release --bin santong >&2

data=$(mktemp -d)
log=$(mktemp)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
./target/release/santong serve --demo --bind "127.0.0.1:$port" --data "$data" --log warn >"$log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$data" "$log"' EXIT
for _ in $(seq 1 100); do grep -q "Santong is running" "$log" && break; sleep 0.2; done
base="http://127.0.0.1:$port"

echo "# Santong HTTP benchmark — $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, ${duration}s per URL, $conns connections, wrk 2 threads"
echo
echo "| URL | requests/s | p50 | p99 |"
echo "|---|---:|---:|---:|"
for path in /healthz /regions /regions/440000 /regions/440305 /api/v1/regions/440305; do
  out=$(wrk -t2 -c"$conns" -d"${duration}s" --latency -H 'Accept-Language: zh-CN' "$base$path")
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  p50=$(awk '$1=="50%" {print $2}' <<<"$out")
  p99=$(awk '$1=="99%" {print $2}' <<<"$out")
  errors=$(awk '/Non-2xx|Socket errors/' <<<"$out")
  echo "| \`$path\` | $rps | $p50 | $p99 |${errors:+ $errors}"
done
echo
echo "| page | bytes (HTML) | bytes (gzip) |"
echo "|---|---:|---:|"
css=$(curl -s "$base/" | grep -o '/static/app-[0-9a-f]*\.css')
for path in / /regions /regions/440000 /regions/440305 /regions/371200 /regions/999999 "$css"; do
  plain=$(curl -s -o /dev/null -w '%{size_download}' "$base$path")
  gz=$(curl -s -o /dev/null -w '%{size_download}' -H 'Accept-Encoding: gzip' "$base$path")
  echo "| \`$path\` | $plain | $gz |"
done
echo
echo "resident memory after the run: $(awk '/VmRSS/ {print $2, $3}' /proc/$pid/status)"
