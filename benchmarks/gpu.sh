#!/usr/bin/env bash
# On a machine with CUDA: the GPU test suite, then the GPU step benchmarks, written to benchmarks/gpu/.
#   bash benchmarks/gpu.sh            (from the repository root, after `make setup`)
# Writes gpu/tests.txt (pytest -m gpu), gpu/step_b100.json and gpu/step_b1000.json (eager, compiled and
# hand-written steps of every engine, images per second), gpu/table.md, the table of both, and
# gpu/peers_b100.json, gpu/peers_b1000.json (pplgen eager and traced beside hand-written PyTorch and Pyro).
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
OUT=benchmarks/gpu
mkdir -p "$OUT"
"$PYTHON" -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.cuda.get_device_name())" || exit 1
"$PYTHON" -m pytest -q -m gpu tests/core/test_gpu.py 2>&1 | tee "$OUT/tests.txt"
for batch in 100 1000; do
    "$PYTHON" benchmarks/compiled_step.py --device cuda --batch-size "$batch" --rounds 200 --json "$OUT/step_b$batch.json"
    "$PYTHON" benchmarks/peers_step.py --device cuda --core -1 --batch-size "$batch" --rounds 200 \
        --json "$OUT/peers_b$batch.json" | tee "$OUT/peers_b$batch.txt"
done
"$PYTHON" - "$OUT" <<'PY'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
lines = ["| batch | engine | torch ms | eager ms | compiled ms | eager img/s | compiled img/s | graph breaks |",
         "|---|---|---|---|---|---|---|---|"]
for batch in (100, 1000):
    results = json.loads((out / f"step_b{batch}.json").read_text())
    for name, row in results["engines"].items():
        ms, rate = row["median_ms"], row["images_per_s"]
        torch_ms = f"{ms['torch']:.2f}" if "torch" in ms else "—"
        lines.append(f"| {batch} | {name} | {torch_ms} | {ms['eager']:.2f} | {ms['compiled']:.2f} | "
                     f"{rate['eager']:,.0f} | {rate['compiled']:,.0f} | {row['breaks']} |")
(out / "table.md").write_text("\n".join(lines) + "\n")
print("\n".join(lines))
PY
