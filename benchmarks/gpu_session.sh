#!/usr/bin/env bash
# Every GPU check and benchmark the issues ask for, in one run on a CUDA machine, most important
# first; each part's output lands in $OUT (default ./gpu-out) as soon as it is done, so a run cut
# short still returns what finished.
#
#     bash benchmarks/device_bundle.sh              # here, once: Ray/Optuna wheels
#     bash benchmarks/gpu_session.sh [PART ...]     # there; parts: env tests compare replicas pack profile
#
# On a machine that has the project's dependencies installed, the bundle is not needed.
# DRY=1 runs the same plumbing on the CPU at tiny sizes (to check the script, not to measure).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
PARTS=${*:-env tests compare replicas pack profile}
PY=${PY:-python3}
export PYTHONUNBUFFERED=1 RAY_USAGE_STATS_ENABLED=0 RAY_AUTH_MODE=${RAY_AUTH_MODE:-disabled}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if [ -f .devbundle/site.tar.xz ] && [ "${DRY:-0}" != 1 ]; then
    # Only packages the image lacks are in it (device_bundle.sh), so nothing is shadowed.
    mkdir -p /tmp/devsite
    [ -d /tmp/devsite/ray ] || "$PY" -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2])' \
        .devbundle/site.tar.xz /tmp/devsite
    export PYTHONPATH="$PYTHONPATH:/tmp/devsite"
fi
YARDSTICK=${YARDSTICK:-benchmarks/reference.py}

if [ "${DRY:-0}" = 1 ]; then
    DEV=cpu; SHAPE=(--hidden 16 --seq-len 20 --batch 8 --layers 2); CELLS=(gru brc); REPS=2; REF_REPS=1
else
    DEV=cuda; SHAPE=(--hidden 256 --seq-len 300 --batch 32 --layers 2); CELLS=(gru lstm mgu brc nbrc)
    REPS=5; REF_REPS=2
fi

part() { case " $PARTS " in *" $1 "*) return 0;; *) return 1;; esac; }
say() { echo "== $* ($(date +%T))"; }

if part env; then
    say env
    { nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 || true
      "$PY" - <<'EOF'
import platform, torch
print("python", platform.python_version(), "torch", torch.__version__, "cuda", torch.version.cuda,
      "device", torch.cuda.get_device_name() if torch.cuda.is_available() else None)
for name in ("ray", "optuna", "pyarrow", "pandas"):
    try:
        print(name, __import__(name).__version__)
    except Exception as exc:  # a missing package is reported, not fatal
        print(name, "MISSING", exc)
EOF
    } 2>&1 | tee "$OUT/env.txt"
fi

if part tests; then
    say "pytest -m gpu"
    if [ "$DEV" = cuda ]; then
        timeout 300 "$PY" -m pytest -q -m gpu -p no:cacheprovider tests/core/test_gpu.py \
            tests/core/test_tasks.py tests/core/scans/test_custom.py \
            tests/core/scans/test_standard.py 2>&1 | tee "$OUT/pytest_gpu.txt"
    else
        echo "DRY: no CUDA; the gpu tests would skip" | tee "$OUT/pytest_gpu.txt"
    fi
fi

if part compare; then
    say "compare against the yardstick ($YARDSTICK)"
    timeout 420 "$PY" benchmarks/compare.py --yardstick "$YARDSTICK" --device "$DEV" "${SHAPE[@]}" \
        --rounds 1 --reps "$REPS" --ref-reps "$REF_REPS" --cells "${CELLS[@]}" \
        --jsonl "$OUT/compare_runs.jsonl" 2>&1 | tee "$OUT/compare.md"
fi

if part replicas; then
    say "seed replicas R = 1 and 8"
    # one process for all runs (the CLI's own main), sparing a start-up per run
    timeout 240 "$PY" - "$DEV" "$REPS" "${SHAPE[@]}" -- "${CELLS[@]}" <<'EOF' 2>&1 | tee "$OUT/replicas.jsonl"
import sys
sys.path.insert(0, "benchmarks")
from bench import main
dev, reps, *rest = sys.argv[1:]
shape, cells = rest[:rest.index("--")], rest[rest.index("--") + 1:]
for cell in cells:
    for r in ("1", "8"):
        main(["--cell", cell, *shape, "--device", dev, "--reps", reps, "--replicas", r, "--json"])
        sys.stdout.flush()
EOF
fi

if part pack; then
    say "GPU packing throughput"
    rm -rf /tmp/gpu-pack
    # the gru half of the smoke grid (18 trials a share) keeps the whole session near 8 minutes
    timeout 420 "$PY" benchmarks/gpu_pack.py --device "$DEV" --results /tmp/gpu-pack --timeout 140 \
        --set model.cell=gru \
        2>&1 | tee "$OUT/pack_log.txt" | grep -v '^\[' | tee "$OUT/pack.md"
fi
if part profile; then
    say "profiles of a warm-up and a train step"
    timeout 150 "$PY" benchmarks/profile_step.py --cells gru lstm brc --device "$DEV" "${SHAPE[@]}" \
        --steps 2 --top 12 2>&1 | tee "$OUT/profile.txt"
fi
say done
