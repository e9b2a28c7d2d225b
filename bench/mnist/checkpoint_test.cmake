# bench/mnist/checkpoint_test.cmake — synk-mnist --save, then --resume:
#   1. --epochs 1 --save ck.npz --json trained.json (SAVE_WORKERS ranks);
#   2. numpy alone (PYTHON, when it has numpy) reads every parameter and its
#      optimizer state with the right shape and dtype;
#   3. --epochs 0 --resume ck.npz --json resumed.json (LOAD_WORKERS ranks)
#      evaluates the checkpoint: with as many ranks as the run that saved
#      it, the same test accuracy and loss exactly (EXACT=ON); with another
#      count (EXACT=OFF) it must load and run, and both results are shown
#      (the same parameters, but the evaluation's rows split differently
#      over the ranks, so its float sums may differ in the last bits).
#
# MODEL=resnet (default mlp): batch norm's running statistics are in the
# checkpoint too (rank 0's), and evaluating it gives the same result.
# ZERO1=ON: the mlp trains with Adam, sharded over the ranks
# (--shard-optimizer), and is resumed unsharded: the checkpoint holds the
# whole state under the usual names ("l1/W/m", "l1/W/v", "l1/W/t").
#
#   cmake -DMNIST=<synk-mnist> -DDIR=<work dir> -DSAVE_WORKERS=2 -DLOAD_WORKERS=2 -DEXACT=ON
#         [-DPYTHON=<python3>] [-DMODEL=resnet] -P checkpoint_test.cmake
cmake_minimum_required(VERSION 3.25)
file(REMOVE_RECURSE "${DIR}")
file(MAKE_DIRECTORY "${DIR}")
if(NOT MODEL)
  set(MODEL mlp)
endif()
if(MODEL STREQUAL "resnet")
  set(common --model resnet --train-limit 300 --batch 50 --seed 3)
elseif(ZERO1)
  set(common --model mlp --train-limit 1000 --batch 100 --seed 3 --optimizer adam)
else()
  set(common --model mlp --train-limit 1000 --batch 100 --seed 3)
endif()
if(ZERO1)
  set(save_args --shard-optimizer)
endif()

function(run_mnist json)
  execute_process(COMMAND "${MNIST}" ${common} ${ARGN} --json "${DIR}/${json}"
                  RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  message(STATUS "synk-mnist ${ARGN}:\n${out}${err}")
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "synk-mnist ${ARGN} failed (${rc})")
  endif()
endfunction()

run_mnist(trained.json --workers ${SAVE_WORKERS} --epochs 1 --save "${DIR}/ck.npz" ${save_args})
if(NOT EXISTS "${DIR}/ck.npz")
  message(FATAL_ERROR "--save wrote no ${DIR}/ck.npz")
endif()
file(GLOB leftovers "${DIR}/ck.npz.tmp-*")
if(leftovers)
  message(FATAL_ERROR "temporary files left behind: ${leftovers}")
endif()

if(PYTHON)
  set(check [=[
import sys
try:
    import numpy as np
except ImportError:
    print("numpy check skipped: no numpy for " + sys.executable)
    sys.exit(0)
f = np.load(sys.argv[1])
got = {k: (f[k].shape, f[k].dtype) for k in f.files}
if sys.argv[2] == "resnet":
    # Parameters with their velocity; running statistics without (state, not parameters).
    for k in ("stem/W", "stem/bn/gamma", "res3/down/W", "fc/W"):
        assert k in got and k + "/velocity" in got, f"{k} or its velocity missing: {sorted(got)}"
    for bn in ("stem/bn", "res1/bn1", "res2/down_bn", "res3/bn2"):
        rm, rv = f[bn + "/running_mean"], f[bn + "/running_var"]
        assert rm.dtype == np.float32 and rm.shape == f[bn + "/gamma"].shape, bn
        assert bn + "/running_mean/velocity" not in got, bn
        assert np.abs(rm).max() > 0 and np.abs(rv - 1).max() > 0, f"{bn}: running statistics never updated"
else:
    shapes = {"l1/W": (784, 800), "l1/b": (800,), "l2/W": (800, 800), "l2/b": (800,),
              "out/W": (800, 10), "out/b": (10,)}
    want = dict(shapes)
    if sys.argv[2] == "zero1":
        # Adam's moments whole, whatever the sharding; its step counter once.
        want.update({k + "/m": v for k, v in shapes.items()})
        want.update({k + "/v": v for k, v in shapes.items()})
        want["l1/W/t"] = ()
    else:
        want.update({k + "/velocity": v for k, v in shapes.items()})
    assert set(got) == set(want), f"names {sorted(got)} != {sorted(want)}"
    for k, shape in want.items():
        assert got[k] == (shape, np.float32), f"{k}: {got[k]}, expected {shape} float32"
    state = "l1/W/m" if sys.argv[2] == "zero1" else "l1/W/velocity"
    assert np.abs(f[state]).max() > 0, "no optimizer state after an epoch"
    if sys.argv[2] == "zero1":
        assert np.abs(f["out/b/v"]).min() > 0, "the last rank's slice of the state is missing"
        assert f["l1/W/t"] == 10, f"step counter {f['l1/W/t']} after 10 steps"
for k in f.files:
    assert np.isfinite(f[k]).all(), k
print(f"numpy read {len(got)} arrays with the right shapes from {sys.argv[1]}")
]=])
  set(kind ${MODEL})
  if(ZERO1)
    set(kind zero1)
  endif()
  execute_process(COMMAND "${PYTHON}" -c "${check}" "${DIR}/ck.npz" "${kind}" RESULT_VARIABLE rc OUTPUT_VARIABLE out
                  ERROR_VARIABLE err)
  message(STATUS "${out}${err}")
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "numpy could not read the checkpoint properly")
  endif()
endif()

run_mnist(resumed.json --workers ${LOAD_WORKERS} --epochs 0 --resume "${DIR}/ck.npz")

file(READ "${DIR}/trained.json" trained)
file(READ "${DIR}/resumed.json" resumed)
foreach(key test_accuracy test_loss)
  string(JSON a GET "${trained}" ${key})
  string(JSON b GET "${resumed}" ${key})
  if(EXACT AND NOT a STREQUAL b)
    message(FATAL_ERROR "${key}: ${a} after training, ${b} from the checkpoint (must be equal)")
  endif()
  message(STATUS "${key}: ${a} after training, ${b} from the checkpoint")
endforeach()
