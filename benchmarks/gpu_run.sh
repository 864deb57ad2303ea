#!/usr/bin/env bash
# One short GPU session: CUDA correctness tests, one planned training run, the loss comparison.
# Run from the repository root on a machine with an NVIDIA GPU, PyTorch, and the datasets in
# $SEGKIT_DATA (dubai_aerial/, crackforest/). Missing Python packages may be given as wheels in
# .whl/ (installed into /tmp/site). Results go to $OUT (default ./gpu_out).
set -u
OUT=${OUT:-gpu_out}
mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site:$PWD/src
else
    export PYTHONPATH=$PWD/src
fi
export PYTHONUNBUFFERED=1 NO_ALBUMENTATIONS_UPDATE=1 HF_HUB_OFFLINE=1
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name(0))" | tee "$OUT/device.txt"

echo "== 1. CUDA tests"
timeout 120 python3 -m pytest -q -p no:cacheprovider tests/evaluation/test_confusion.py tests/prediction/test_crf.py \
    tests/prediction/test_predictor.py tests/training/test_trainer.py -k "gpu or cuda or GPU" \
    2>&1 | tail -15 | tee "$OUT/tests.txt"

echo "== 2. A planned GPU run: Dubai aerial, 2 minutes"
timeout 200 python3 -m segkit train "$SEGKIT_DATA/dubai_aerial" --masks masks --time-budget 2m --device cuda \
    --out "$OUT/dubai_gpu" --logger csv 2>&1 | grep -v "^\s*$" | tail -40 | tee "$OUT/gpu_run.txt"
cp "$OUT/dubai_gpu/plan.json" "$OUT/plan.json" 2>/dev/null

echo "== 3. Loss choice at fixed epochs"
for dataset in crackforest dubai; do
    timeout "${LOSS_SECONDS:-130}" python3 benchmarks/losses.py --device cuda --no-report --datasets "$dataset" \
        > "$OUT/losses_$dataset.json" 2> "$OUT/losses_$dataset.log"
    grep -E "RESULT|Error|error" "$OUT/losses_$dataset.log" | tail -8
done
rm -rf "$OUT/dubai_gpu"
