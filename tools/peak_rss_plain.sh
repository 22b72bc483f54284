#!/usr/bin/env bash
# Peak RSS of one plain driving run (P = 1, no speed-up: the world's own runner; walk_signal, 4 Euler steps,
# seed 0) and its NFE and branch counts. Usage: tools/peak_rss_plain.sh SAMPLES HORIZON BATCH CHUNK
# (BATCH = world_options.batch, CHUNK = FASTDIFF_CHUNK_ROLLOUTS), e.g. tools/peak_rss_plain.sh 20000 2 16384 1024
set -euo pipefail
samples=$1 horizon=$2 batch=$3 chunk=$4
spec="{\"world\": \"driving\", \"scene\": \"walk_signal\", \"solver\": \"euler\", \"steps\": 4, \"horizon\": $horizon, \"samples\": $samples, \"seed\": 0, \"world_options\": {\"batch\": $batch}}"
out=$(mktemp -d)
/usr/bin/time -f "%M %e" -o "$out/time" env FASTDIFF_CHUNK_ROLLOUTS="$chunk" OMP_NUM_THREADS=1 \
  fastdiff run --spec "$spec" --json > "$out/run.json"
read -r kb wall < "$out/time"
python3 - "$samples" "$horizon" "$batch" "$chunk" "$kb" "$wall" "$out/run.json" <<'PY'
import json, sys
samples, horizon, batch, chunk, kb, wall, path = sys.argv[1:]
r = json.load(open(path))
counts = {h["label"]: h["count"] for h in r["histograms"]}
print(f"samples={samples} H={horizon} batch={batch} chunk={chunk} peak_rss_mb={int(kb) / 1024:.0f} wall_s={wall} "
      f"nfe_counted={r['nfe_counted']:.0f} counts={counts}")
PY
rm -rf "$out"
