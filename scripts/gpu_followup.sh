set -uo pipefail
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-deps --no-build-isolation -e . >/dev/null 2>&1 || exit 1
F="--warmup 0.2 --min-time 0.5 --case-timeout 200"
L="--backend torch-cuda --model llama-3.1-8b --dtype bfloat16 --workload decode --batch 1 --tokens 2048"
echo "== decode b1, GEMV=cublas"; timeout 110 python3 -m infercost.cli run $L $F --out $OUT/llm2.jsonl 2>&1 | grep -E "^\[|error" 
echo "== decode b1, GEMV=reduction"; INFERCOST_GEMV=reduction timeout 110 python3 -m infercost.cli run $L $F --out $OUT/llm2.jsonl 2>&1 | grep -E "^\[|error"
echo "== matmul sweep"; timeout 95 python3 -m infercost.cli run --backend torch-cuda,jax-gpu --shape=256x256x256 --shape=1024x1024x1024 --shape=2048x2048x2048 --shape=4096x4096x4096 --shape=8192x8192x8192 --dtype bfloat16 $F --out $OUT/matmul2.jsonl 2>&1 | grep -E "^\[|error"
