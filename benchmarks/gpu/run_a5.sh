#!/usr/bin/env bash
# On a GPU machine lent by the device tool (after benchmarks/gpu/prepare.sh here): the full A5
# pipelines (650 pretraining epochs, 10 finetuning epochs, dev + test evaluation) of the vanilla
# and perceiver configs with the defaults (the fast engine), each timed end to end, compiles included.
#   device run: carry [".whl", ".a5data"], command "bash benchmarks/gpu/run_a5.sh", timeout_s 600
# Environment: CONFIGS (default "vanilla perceiver"), LIMIT (seconds a run, default 270),
# EXTRA (more flags, e.g. a rehearsal on CPU with fewer epochs), OUT (where logs and results go).
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/birthjax-gpu}
mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site
fi
export PYTHONUNBUFFERED=1
python3 -c "import jax, flax; print('jax', jax.__version__, 'flax', flax.__version__, jax.devices())" | tee "$OUT/env.txt"
for cfg in ${CONFIGS:-vanilla perceiver}; do
  start=$(date +%s.%N)
  timeout "${LIMIT:-270}" python3 main.py --config="configs/$cfg.py" --config.data.dir=.a5data \
    --config.compile_cache= \
    --workdir="/tmp/runs/$cfg" ${EXTRA:-} > "$OUT/$cfg.log" 2>&1
  rc=$?
  wall=$(python3 -c "import time; print(f'{time.time() - $start:.1f}')")
  cp "/tmp/runs/$cfg/results.json" "$OUT/$cfg.results.json" 2>/dev/null
  acc=$(grep -o "Correct: .*" "$OUT/$cfg.log" | head -1)
  echo "$cfg: exit $rc, wall ${wall} s, dev: ${acc:-none}" | tee -a "$OUT/summary.txt"
  tail -c 1500 "$OUT/$cfg.log" | tr '\r' '\n' | tail -n 6
done
