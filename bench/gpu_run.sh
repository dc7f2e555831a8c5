#!/usr/bin/env bash
# The GPU machine's run behind docs/gpu.md, for a machine that cannot download: a bundle folder
# holds this repository (src/), wheels of what the machine's python3 lacks (whl/: msgspec, gguf,
# mlx, mlx-lm, Impetus and its plugins) and the llama.cpp tree of the pinned llama-cpp-python sdist
# (llama.cpp.tar.xz); mlx_cuda_13-*.whl may come in parts (part*), joined here. Work goes to $G.
#
#   bench/gpu_run.sh BUNDLE setup    install the wheels; build llama-server (CUDA) with scripts/setup
#                                    in the background; write the benchmark models meanwhile
#   bench/gpu_run.sh BUNDLE check    wait for the build; the GPU tests and doctor
#   bench/gpu_run.sh BUNDLE bench    bench/gpu.py in the background, into $G/gpu.json
#   bench/gpu_run.sh BUNDLE wait S   wait up to S seconds for the benchmark, then collect into $OUT
set -u
BUNDLE=$(cd "$1" && pwd)
STAGE=$2
G=${G:-/tmp/g}
OUT=${OUT:-$G/out}
mkdir -p "$G" "$OUT"
export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1
SERVER=$G/src/.venv/libexec/impetus/llama-server
MODELS=llama-8b:Q4_0,llama-8b:Q8_0,smollm2-135m:Q4_1

case $STAGE in
setup)
  nvidia-smi --query-gpu=name,compute_cap,memory.total,memory.free,driver_version --format=csv
  nvcc --version | tail -2; cmake --version | head -1; echo "ninja $(ninja --version)"; python3 --version; nproc
  cp "$BUNDLE"/part* "$G"/ 2>/dev/null
  ls "$G"/part* >/dev/null 2>&1 && [ "$(ls "$G"/part* | wc -l)" -ge 2 ] && cat "$G"/part* > "$G/mlx_cuda_13-0.32.4-py3-none-manylinux_2_35_x86_64.whl"
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$BUNDLE"/whl/*.whl || exit 1
  [ -d "$G/llama.cpp" ] || tar xJf "$BUNDLE/llama.cpp.tar.xz" -C "$G"
  if [ ! -e "$G/build.started" ]; then
    rm -rf "$G/src" && cp -r "$BUNDLE/src" "$G/src" && touch "$G/build.started"
    (cd "$G/src" && setsid bash -c "s=\$(date +%s); IMPETUS_LLAMA_CPP_SRC=$G/llama.cpp IMPETUS_LLAMA_SERVER_ONLY=1 IMPETUS_BUILD_CACHE=$G/cache scripts/setup > $G/build.log 2>&1; echo \$? > $G/build.rc; echo \$(( \$(date +%s) - s )) > $G/build.s" < /dev/null > /dev/null 2>&1 &)
  fi
  mkdir -p "$G/models"
  (cd "$BUNDLE/src" && python3 -c "
import sys; sys.path[:0] = ['bench', 'tests']
from pathlib import Path
from gpu import ensure_model
for spec in '$MODELS'.split(','):
    ensure_model(spec, Path('$G/models'))
")
  df -h "$G" | tail -1
  ;;
check)
  while [ ! -e "$G/build.rc" ]; do sleep 5; done
  echo "build: exit $(cat "$G/build.rc") in $(cat "$G/build.s") s"; tail -5 "$G/build.log"; cp "$G/build.log" "$OUT/"
  [ "$(cat "$G/build.rc")" = 0 ] || exit 1
  grep -c '\.cu\.o' "$G/build.log" || true
  cat "$SERVER.flags" | tr '\n' ' '; echo
  cd "$G/src" && IMPETUS_LLAMA_SERVER=$SERVER timeout 300 python3 -m pytest -q -rs -p no:cacheprovider tests/test_gpu.py 2>&1 | tee "$OUT/tests.txt" | tail -15
  IMPETUS_LLAMA_SERVER=$SERVER IMPETUS_HOME=$G/home timeout 200 python3 -m impetusctl doctor 2>&1 | tee "$OUT/doctor.txt"
  ;;
bench)
  [ -e "$G/bench.started" ] && exit 0
  [ "$(cat "$G/build.rc" 2>/dev/null)" = 0 ] || { echo "no llama-server built yet"; exit 1; }
  touch "$G/bench.started"
  (cd "$G/src" && setsid bash -c "python3 bench/gpu.py --llama-server $SERVER --dir $G/models --models $MODELS --out $G/gpu.json > $G/bench.log 2>&1; echo \$? > $G/bench.rc" < /dev/null > /dev/null 2>&1 &)
  ;;
wait)
  end=$((SECONDS + ${3:-500}))
  while [ ! -e "$G/bench.rc" ] && [ $SECONDS -lt $end ]; do sleep 5; done
  cp "$G/bench.log" "$OUT/" 2>/dev/null; cp "$G/gpu.json" "$OUT/" 2>/dev/null
  echo "bench: $(cat "$G/bench.rc" 2>/dev/null || echo running)"; tail -5 "$G/bench.log"
  ;;
mlx)
  # MLX's CUDA backend: the wheel joined from its parts (carried in two calls), installed with mlx
  # into its own folder ahead of the rest; its device; then MLX vs llama.cpp on shapes both run.
  cp "$BUNDLE"/part* "$G"/ 2>/dev/null
  cat "$G"/partaa "$G"/partab > "$G/mlx_cuda_13-0.32.4-py3-none-manylinux_2_35_x86_64.whl" || exit 1
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site2 "$BUNDLE"/whl/mlx-0.32.4-*.whl "$G"/mlx_cuda_13-*.whl || exit 1
  export PYTHONPATH=/tmp/site2:/tmp/site
  python3 -c "import mlx.core as mx; print('mlx', mx.__version__, mx.default_device(), 'cuda available:', mx.cuda.is_available()); a = mx.random.normal((4096, 4096)); print('matmul sum', (a @ a).sum().item())" 2>&1 | tee "$OUT/mlx.txt"
  IMPETUS_HOME=$G/home timeout 120 python3 -m impetusctl doctor 2>&1 | grep -i -A1 "mlx\|backends" | tee -a "$OUT/mlx.txt"
  (cd "$G/src" && timeout "${3:-300}" python3 bench/gpu.py --llama-server "$SERVER" --dir "$G/models" --models "" --mlx "${MLX_MODELS:-smollm2-135m:Q4_1,llama-8b:Q4_0}" --runs 3 --out "$OUT/mlx.json" 2>&1 | tail -40)
  ;;
esac
