#!/usr/bin/env bash
# bench/results/ab_before_after.sh OUTDIR ROUNDS — alternating before (B: /work/baseline, a copy of the old build/bin and its lib/) / after (A: $AFTER/bin) runs of dispatch, MNIST w1/w2 and all-reduce; prints medians.
set -u
out=$1; rounds=${2:-5}; mkdir -p "$out"
AFTER=${AFTER:?}
runB() { LD_LIBRARY_PATH=/work/baseline/lib /work/baseline/$1 "${@:2}"; }
runA() { "$AFTER/bin/$1" "${@:2}"; }
for r in $(seq 1 "$rounds"); do
  for v in B A; do
    run$v synk-dispatch --workers 2 --iters 50000 --json "$out/dispatch_${v}_$r.json" >/dev/null 2>&1
    run$v synk-mnist --model mlp --workers 1 --epochs 2 --json "$out/mnist_w1_${v}_$r.json" >/dev/null 2>&1
    run$v synk-mnist --model mlp --workers 2 --epochs 2 --json "$out/mnist_w2_${v}_$r.json" >/dev/null 2>&1
    run$v synk-collectives --op all_reduce --workers 2 --min-bytes 1048576 --max-bytes 67108864 --json "$out/ar_${v}_$r.json" >/dev/null 2>&1
  done
done
python3 - "$out" "$rounds" <<'PY'
import json,sys,statistics as st
out,R=sys.argv[1],int(sys.argv[2])
def get(f,k):
    try: return json.load(open(f))[k]
    except Exception as e: return None
def busbw(f):
    try: d=json.load(open(f))
    except Exception: return None
    rows=d.get('results') or d.get('rows') or d
    vals=[x.get('busbw_gbs') for x in rows if isinstance(x,dict)]
    vals=[v for v in vals if v is not None]
    return sum(vals)/len(vals) if vals else None
for name,fn in [('dispatch p50 us',lambda v,r:get(f'{out}/dispatch_{v}_{r}.json','p50_us')),
                ('dispatch p99 us',lambda v,r:get(f'{out}/dispatch_{v}_{r}.json','p99_us')),
                ('mnist w1 samples/s',lambda v,r:get(f'{out}/mnist_w1_{v}_{r}.json','samples_per_sec')),
                ('mnist w2 samples/s',lambda v,r:get(f'{out}/mnist_w2_{v}_{r}.json','samples_per_sec')),
                ('all_reduce avg busbw 1-64MiB GB/s',lambda v,r:busbw(f'{out}/ar_{v}_{r}.json'))]:
    B=[fn('B',r) for r in range(1,R+1)]; A=[fn('A',r) for r in range(1,R+1)]
    Bv=[x for x in B if x is not None]; Av=[x for x in A if x is not None]
    mb=st.median(Bv) if Bv else float('nan'); ma=st.median(Av) if Av else float('nan')
    print(f"{name}: before {mb:.4g} after {ma:.4g} ratio {ma/mb:.3f} | B {['%.4g'%x for x in Bv]} A {['%.4g'%x for x in Av]}")
PY
