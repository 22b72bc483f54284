#!/usr/bin/env bash
# Peak RSS of one big planning cycle (driving world, P x R = 200 x 1000 = 200,000 rollouts, H = 2,
# 2 Euler steps, shipped teacher) at each FASTDIFF_CHUNK_ROLLOUTS given, and the run's NFE and branch
# counts, which must not depend on the setting. Usage: tools/peak_rss_chunks.sh 1024 16384 1000000
set -euo pipefail
spec='{"world": "driving", "scene": "child_at_curb", "solver": "euler", "steps": 2, "horizon": 2, "plans": 200, "futures": 1000, "samples": 1, "seed": 0}'
out=$(mktemp -d)
for chunk in "$@"; do
  /usr/bin/time -f "%M %e" -o "$out/time" env FASTDIFF_CHUNK_ROLLOUTS="$chunk" OMP_NUM_THREADS=1 \
    fastdiff run --spec "$spec" --json > "$out/run.json"
  read -r kb wall < "$out/time"
  python3 - "$chunk" "$kb" "$wall" "$out/run.json" <<'PY'
import hashlib, json, sys
chunk, kb, wall, path = sys.argv[1:]
r = json.load(open(path))
counts = [(h["group"], h["label"], h["count"]) for h in r["histograms"]]
print(f"chunk={chunk} peak_rss_mb={int(kb) / 1024:.0f} wall_s={wall} nfe_counted={r['nfe_counted']:.0f} "
      f"counts_sha={hashlib.sha256(repr(counts).encode()).hexdigest()[:12]}")
PY
done
rm -rf "$out"
