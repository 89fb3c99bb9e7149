#!/usr/bin/env bash
# Moves one large file through the real binaries — courier run → courier-ingest
# (file store) on loopback — and reports wall time and peak memory of each process,
# against a peer measured in the same run: copying the file with fsync and hashing
# it once (the least any verified transfer must do on this disk).
#
#   bench/move-large-file.sh [SIZE_MiB] [CHUNK]     e.g. bench/move-large-file.sh 1024 8MiB
set -euo pipefail
size_mib=${1:-1024}
chunk=${2:-8MiB}
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d /var/tmp/courier-move.XXXXXX)
trap 'for j in $(jobs -p); do pkill -KILL -P $j 2>/dev/null; done; wait 2>/dev/null || true; rm -rf "$work"' EXIT
cd "$root"
CGO_ENABLED=0 go build -o "$work/courier" ./cmd/courier
CGO_ENABLED=0 go build -o "$work/courier-ingest" ./cmd/courier-ingest
mkdir -p "$work/inbox" "$work/objects" "$work/data"
head -c $((size_mib << 20)) /dev/urandom > "$work/source.bin"

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat > "$work/courier.yaml" <<YAML
agent: { id: bench, data_dir: $work/data }
upload: { endpoint: "http://127.0.0.1:$port/files/", chunk_size: $chunk, concurrency: 1 }
spool: { max_bytes: 100GiB, min_free_disk: 1GiB }
sources:
  - { name: inbox, kind: folder, path: $work/inbox, settle: 200ms, rescan: 1s, after: delete, max_size: 100GiB }
events: { file: $work/events.jsonl }
http: { listen: "off" }
log: { level: warn, format: text }
YAML

/usr/bin/time -f '%M' -o "$work/ingest.rss" "$work/courier-ingest" --listen 127.0.0.1:$port --store "file://$work/objects" --log-level warn 2>"$work/ingest.log" &
ingest_pid=$!
/usr/bin/time -f '%M' -o "$work/agent.rss" "$work/courier" run --config "$work/courier.yaml" 2>"$work/agent.log" &
agent_pid=$!
sleep 1

# Peer: copy with fsync + one SHA-256 pass, same file, same disk, same run.
t0=$(date +%s.%N)
cp "$work/source.bin" "$work/peer.bin" && sync "$work/peer.bin"
sha256sum "$work/source.bin" >/dev/null
t1=$(date +%s.%N)
rm -f "$work/peer.bin"

t2=$(date +%s.%N)
mv "$work/source.bin" "$work/inbox/source.bin"   # same filesystem: a rename, as an exporter drops files
until grep -q 'file.verified' "$work/events.jsonl" 2>/dev/null; do sleep 0.1; done
t3=$(date +%s.%N)

# GNU time ignores SIGINT itself: signal the programs it runs.
pkill -INT -P $agent_pid; wait $agent_pid || true
pkill -TERM -P $ingest_pid; wait $ingest_pid || true
python3 - "$t0" "$t1" "$t2" "$t3" "$size_mib" "$(cat "$work/agent.rss")" "$(cat "$work/ingest.rss")" "$chunk" <<'PY'
import sys
t0,t1,t2,t3=map(float,sys.argv[1:5]); mib=int(sys.argv[5]); a,i=int(sys.argv[6]),int(sys.argv[7])
peer=t1-t0; move=t3-t2
print(f"file {mib} MiB, chunk {sys.argv[8]}")
print(f"courier: dropped -> verified event   {move:7.2f} s  {mib/move:7.1f} MiB/s")
print(f"peer:    cp+fsync+sha256sum          {peer:7.2f} s  {mib/peer:7.1f} MiB/s")
print(f"ratio courier/peer                   {move/peer:7.2f}")
print(f"peak RSS: agent {a/1024:.1f} MiB, ingest {i/1024:.1f} MiB")
PY
