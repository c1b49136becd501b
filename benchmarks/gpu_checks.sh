#!/usr/bin/env bash
# Every GPU measurement in one command, sized for a 10-minute call.
#
#   bash benchmarks/gpu_checks.sh OUT_DIR [DATA_DIR]
#
# Run from the repository root on a machine with a GPU, JAX, PyTorch and
# ml-collections (TensorFlow is not needed). DATA_DIR holds
# cifar10_prefix_train.npz (the offline CIFAR-10 images) for the bfloat16
# accuracy check, which is skipped without it. Each step writes its table to
# OUT_DIR as soon as it ends, under its own time limit, most important first:
#
#   1. meta_step.txt: the CE and meta step, ltjax vs the official PyTorch
#      algorithm on the same GPU (target: meta step >= 5x PyTorch's images/s);
#   2. seeds.txt: 1 vs 8 vectorized seeds, step times of both stages
#      (target: 8 seeds < 2x one seed's time);
#   3. precision.txt: bfloat16 vs float32 test error on the real images;
#   4. whole_run.txt: a whole CIFAR-10-LT run, 200 epochs, ResNet-32, meta
#      stage included, data on the device (target: < 3 minutes);
#   5. epoch.txt: meta-stage epochs with each side's input pipeline.
#
# PYTHON (default python3) runs the benchmarks; STEPS picks steps by name
# (default all; e.g. STEPS='meta_step seeds precision', then STEPS='whole_run
# epoch', to split the work over two calls); SCALE=smoke shrinks every step
# to seconds (the CPU test of this script).
set -uo pipefail
out=${1:?usage: bash benchmarks/gpu_checks.sh OUT_DIR [DATA_DIR]}
data=${2:-}
py=${PYTHON:-python3}
mkdir -p "$out"
export PYTHONUNBUFFERED=1

if [[ ${SCALE:-full} == smoke ]]; then
  tiny=(--model=tiny --batch_size=8 --dev_batch_size=4)
  small=(--pool_per_class=120 --image_size=8 --log_every_steps=2)
  meta_step=("${tiny[@]}" --image_size=8 --repeats=1 --warmup=1)
  seeds=("${tiny[@]}" "${small[@]}" --epochs=2 --meta_epochs=1 --seeds=1,2)
  whole=("${tiny[@]}" "${small[@]}" --epochs=2 --meta_epochs=1)
  precision=(--model=tiny --epochs=1 --meta_epochs=1 --seeds=2 --log_every_steps=2)
  epoch=("${tiny[@]}" --pool_per_class=120 --image_size=8 --steps=2)
  limit=300
else
  meta_step=(--repeats=20 --warmup=5)
  seeds=(--epochs=6 --meta_epochs=3 --seeds=1,8)
  whole=()
  precision=(--epochs=60 --meta_epochs=20 --seeds=4)
  epoch=(--stages=meta --steps=40 --workers=4)
  limit=0
fi

steps=" ${STEPS:-meta_step seeds precision whole_run epoch} "
step() {  # step NAME SECONDS COMMAND...: run, keep its table, go on if it fails
  local name=$1 seconds=$2
  shift 2
  [[ $steps == *" $name "* ]] || return 0
  ((limit)) && seconds=$limit
  echo "== $name: $* (limit ${seconds}s)"
  local start=$SECONDS
  timeout "$seconds" "$@" >"$out/$name.txt" 2>"$out/$name.err"
  local rc=$?
  echo "== $name: rc=$rc after $((SECONDS - start))s"
  cat "$out/$name.txt"
  ((rc)) && tail -n 20 "$out/$name.err"
  return 0
}

{
  date -u
  nvidia-smi -L 2>/dev/null || echo 'nvidia-smi: none'
  "$py" -c 'import jax, torch; print("jax", jax.__version__, jax.devices()); print("torch", torch.__version__, torch.cuda.is_available())'
} >"$out/machine.txt" 2>&1
cat "$out/machine.txt"

step meta_step 120 "$py" -m benchmarks.meta_step --memory=false "${meta_step[@]}"
step seeds 180 "$py" -m benchmarks.train_run "${seeds[@]}"
if [[ -n $data ]]; then
  step precision 150 "$py" -m benchmarks.train_run --data_dir="$data" \
    --dtypes=float32,bfloat16 "${precision[@]}"
fi
step whole_run 280 "$py" -m benchmarks.train_run "${whole[@]}"
step epoch 120 "$py" -m benchmarks.epoch "${epoch[@]}"
