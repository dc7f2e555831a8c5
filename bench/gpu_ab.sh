#!/usr/bin/env bash
# Versions of Impetus side by side on the GPU machine (docs/gpu.md, "The 0.938 point, run again"):
# bench/gpu_run.sh's setup and check (build, GPU tests), then bench/gpu.py on llama-8b Q4_0 once per
# version: c = the bundle's own wheels (B/whl), a and b = the wheels in B/whl_a and B/whl_b (built
# with `pip wheel --no-deps` from other commits). B: the bundle folder (default ./.gpu); OUT: results.
export G=/tmp/g
OUT=${OUT:-$G/out}
mkdir -p "$OUT"
B=${B:-$(pwd)/.gpu}
bash $B/src/bench/gpu_run.sh $B setup > $OUT/setup.txt 2>&1
for v in a b; do python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site_$v $B/whl_$v/*.whl; done
bash $B/src/bench/gpu_run.sh $B check > $OUT/check.txt 2>&1
tail -3 $OUT/check.txt; grep -E "passed|failed" $OUT/tests.txt
cd /tmp/g/src
S=/tmp/g/src/.venv/libexec/impetus/llama-server
for v in c a b; do
  if [ $v = c ]; then P=/tmp/site; else P=/tmp/site_$v:/tmp/site; fi
  PYTHONPATH=$P PYTHONUNBUFFERED=1 timeout 110 python3 bench/gpu.py --llama-server $S --dir /tmp/g/models --models llama-8b:Q4_0 --streams 1,4 --reps 5 --runs 5 --out $OUT/$v.json > $OUT/$v.log 2>&1
  python3 - $OUT/$v.json <<'PY'
import json, sys
try:
    m = json.load(open(sys.argv[1]))["models"][0]
except Exception as e:
    print(sys.argv[1], "no result", e); raise SystemExit
print(sys.argv[1], m["single_ratio_impetus_vs_direct"], m["single_ttft_delta_ms"], [(c["streams"], c["ratio_aggregate_tps"], c["impetus"]["aggregate_tps_each"], c["llama_server_direct"]["aggregate_tps_each"]) for c in m["concurrent"]])
PY
done
