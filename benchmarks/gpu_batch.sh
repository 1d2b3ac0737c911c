#!/usr/bin/env bash
# The GPU session's share of the benchmarks, run through the device tool from the repository root:
#   the 50-class ViT-B/16 timing (issue 6), the benchmark zoo (resumed from what is carried in
#   benchmarks/zoo), the per-class learning curves that chose the fast schedule (schedule_design.py),
#   and the detection benchmark's Neural Cleanse scans and repairs (issue 4, resumed from the cache).
# Needs open_clip's wheels in .whl (the GPU image has torch but not open_clip). Everything it makes
# is copied to $OUT. BUDGET (seconds of work, default 420) bounds the whole batch; steps that no longer
# fit are skipped and said so.
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  && export PYTHONPATH=/tmp/site || exit 1
export PYTHONUNBUFFERED=1
nvidia-smi -L
deadline=$((SECONDS + ${BUDGET:-420}))
step() {
  local left=$((deadline - SECONDS))
  if [ "$left" -lt 15 ]; then echo "== skipped (no time left): $*"; return; fi
  echo "== $* (${left} s left)"; local t0=$SECONDS
  timeout "$left" "$@"; echo "== rc=$? in $((SECONDS - t0)) s"
}
for job in ${JOBS:-timing zoo curves curves3}; do
  case $job in
    timing) step python3 benchmarks/gpu_timing.py --out "$OUT/gpu_timing" ;;
    zoo) step python3 -m inspector --device cuda zoo build --out benchmarks/zoo --clean 10 --per-attack 5 --seed 0 \
           --backdoor-kind both --json > "$OUT/zoo_build.json" ;;
    curves) step python3 benchmarks/schedule_design.py collect --device cuda --lr 0.1 ;;
    curves3) step python3 benchmarks/schedule_design.py collect --device cuda --lr 0.3 ;;
    nc) step python3 benchmarks/detection.py --device cuda --methods neural-cleanse --no-repair ;;
    repair) step python3 benchmarks/detection.py --device cuda --methods inspector ;;
  esac
done
tar czf "$OUT/zoo.tgz" --exclude='*.safetensors' benchmarks/zoo && ls -la "$OUT"
