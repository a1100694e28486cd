#!/usr/bin/env bash
# GPU check (issue 12): on a CUDA machine, in under 10 minutes,
#   1. the step benchmark with --device cuda (bf16, a 1B-class random Llama, 128k vocabulary),
#   2. one `cutalign train` of a few steps with LoRA, 8-bit loaded (bitsandbytes),
#   3. the packed path with sdpa and FlashAttention-2 varlen: packed == each row alone.
# Every path must run: anything missing (no GPU, bitsandbytes, flash-attn, a benchmark row not run,
# padded batches instead of packed ones) fails the script with a message. Never part of CI.
#
#   bash benchmarks/gpu_check.sh              # on the GPU machine, from the repository root
#   bash benchmarks/gpu_check.sh --dry-run    # anywhere: print the commands, check the CPU-side
#                                              # preconditions, run nothing on a GPU
# Environment: PYTHON (default .venv/bin/python), OUT (default a new temporary folder),
# SHARED (default ../shared: data and tokenizer), GPU_CHECK_SKIP_FLASH=1 to accept a machine where
# no flash-attn wheel installs (then the skip is printed as SKIPPED and the exit code is 3).
set -euo pipefail

DRY_RUN=0
if [[ "${1:-}" == "--dry-run" ]]; then DRY_RUN=1; fi
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
SHARED=${SHARED:-../shared}
OUT=${OUT:-$(mktemp -d -t cutalign-gpu-check.XXXXXX)}
DATA="$SHARED/data/cut-online/train-alpaca-sample-iter1.json"
TOKENIZER="$SHARED/tokenizers/llama2"
MODEL="$OUT/llama-1b-128k"
START=$SECONDS
SKIPPED=()

fail() { echo "gpu_check: FAIL: $*" >&2; exit 1; }
step() { echo; echo "=== gpu_check [$((SECONDS - START)) s]: $*" >&2; }
run() {
  echo "+ $*" >&2
  if (( DRY_RUN )); then return 0; fi
  "$@"
}

step "preconditions"
[[ -x "$PY" ]] || fail "no Python at $PY (set PYTHON)"
[[ -f "$DATA" ]] || fail "missing data $DATA (set SHARED)"
[[ -d "$TOKENIZER" ]] || fail "missing tokenizer $TOKENIZER (set SHARED)"
if (( ! DRY_RUN )); then
  command -v nvidia-smi >/dev/null || fail "nvidia-smi not found: this script needs a CUDA GPU"
  nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
  "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" \
    || fail "torch.cuda.is_available() is false (a CPU-only torch build?)"
fi
echo "output: $OUT" >&2

step "install what the GPU paths need"
run "$PY" -m pip install --quiet -e . bitsandbytes
if ! "$PY" -c "import flash_attn" 2>/dev/null; then
  # flash-attn publishes no wheels on PyPI; building it takes far longer than this check may.
  run "$PY" -m pip install --quiet --only-binary=:all: flash-attn || true
fi
if (( ! DRY_RUN )); then
  "$PY" -c "import bitsandbytes" || fail "bitsandbytes does not import: the 8-bit path cannot run"
fi
FLASH=1
if (( ! DRY_RUN )) && ! "$PY" -c "import flash_attn" 2>/dev/null; then
  [[ "${GPU_CHECK_SKIP_FLASH:-0}" == 1 ]] || fail "flash-attn not installable as a wheel here; set GPU_CHECK_SKIP_FLASH=1 to run the rest"
  FLASH=0
  SKIPPED+=("flash_attention_2 packed path (flash-attn not installed)")
fi

step "a random 1B-class Llama with a 128k vocabulary (bf16, safetensors)"
run "$PY" - "$MODEL" "$TOKENIZER" <<'EOF'
import sys

import torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

path, tokenizer_path = sys.argv[1], sys.argv[2]
torch.manual_seed(0)
config = LlamaConfig(vocab_size=128256, hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
                     num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=4096,
                     tie_word_embeddings=False, dtype="bfloat16")
model = LlamaForCausalLM(config).to(torch.bfloat16)
print(f"parameters: {sum(p.numel() for p in model.parameters()) / 1e9:.2f} B")
model.save_pretrained(path, safe_serialization=True)
tokenizer = AutoTokenizer.from_pretrained(tokenizer_path)
tokenizer.pad_token = tokenizer.unk_token
tokenizer.save_pretrained(path)
EOF

step "1. the step benchmark on CUDA (bf16, 1B-class, vocab 128256)"
run timeout 300 "$PY" benchmarks/cut_step.py --device cuda --dtype bfloat16 --hidden-size 2048 --num-layers 16 \
  --num-heads 32 --vocab-sizes 128256 --repeats 3 --sections steps,useful-work --json "$OUT/bench.json"
if (( ! DRY_RUN )); then
  "$PY" - "$OUT/bench.json" <<'EOF' || fail "a benchmark row that must run did not"
import json
import sys

report = json.load(open(sys.argv[1]))
rows = report["steps"]["rows"]
must = {"cut-fake_positive", "cut-instruction_only", "cutalign-sft", "trl-sft"}
ran = {r["method"] for r in rows if "skipped" not in r}
for r in rows:
    print(r["method"], r.get("skipped") or f"{r['time_s']:.3f} s, peak {r['peak_bytes'] / 2**20:,.0f} MiB")
missing = must - ran
if missing:
    sys.exit(f"not run: {sorted(missing)}")
packed = [r for r in report["useful_work"]["rows"] if "packed" in r["layout"]]
if not packed or any(r["all"]["real"] < 0.9 * r["all"]["computed"] for r in packed):
    sys.exit("packed rows missing or computing more than 10% padding")
EOF
fi

step "2. cutalign train: LoRA on the 8-bit loaded model, a few steps"
run timeout 240 "$PY" -m cutalign train --model "$MODEL" --data "$DATA" --data_format cut-alpaca \
  --output_dir "$OUT/train" --max_steps 4 --per_device_train_batch_size 4 --max_length 512 --bf16 true \
  --use_peft --lora_r 16 --lora_target_modules q_proj k_proj v_proj o_proj --load_in_8bit true \
  --logging_steps 1 --save_strategy no --report_to none 2> >(tee "$OUT/train.log" >&2)
if (( ! DRY_RUN )); then
  tail -5 "$OUT/train.log"
  [[ -f "$OUT/train/train_results.json" ]] || fail "cutalign train wrote no train_results.json (see $OUT/train.log)"
  grep -q "padded, length-grouped batches instead of packed ones" "$OUT/train.log" \
    && fail "cutalign train fell back to padded batches on the GPU (see $OUT/train.log)"
  # sdpa packs into the rows its attention cost favours: the rows' padding tails are the only waste.
  "$PY" - "$OUT/train.log" <<'EOF' || fail "no step logged useful_token_fraction >= 0.9 (packed batches) in $OUT/train.log"
import re
import sys

fractions = [float(v) for v in re.findall(r"useful_token_fraction.: .?([0-9.]+)", open(sys.argv[1]).read())]
print("useful_token_fraction:", fractions)
sys.exit(0 if fractions and min(fractions) >= 0.9 else 1)
EOF
fi

step "3. packed rows == each row alone (sdpa and flash_attention_2, bf16 on CUDA)"
run timeout 180 "$PY" - "$MODEL" "$FLASH" <<'EOF'
import sys

import torch
from transformers import AutoModelForCausalLM

from cutalign.data.collator import ContextCollator
from cutalign.logprobs import packing_unsupported_reason, token_logprobs

path, flash = sys.argv[1], sys.argv[2] == "1"
gen = torch.Generator().manual_seed(0)
features = [{"completion_ids": torch.randint(3, 30000, (n,), generator=gen).tolist(),
             "plain_prompt_ids": [1, *torch.randint(3, 30000, (p,), generator=gen).tolist()], "is_negative": False}
            for n, p in ((200, 40), (37, 300), (120, 9), (64, 64))]
collate = {"one row": ContextCollator(0, ("plain",), (), padding_free=True),
           "bounded rows": ContextCollator(0, ("plain",), (), padding_free=True, packed_row_length=1),
           "alone": ContextCollator(0, ("plain",), ())}
for attn in ("sdpa", "flash_attention_2") if flash else ("sdpa",):
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.bfloat16, attn_implementation=attn).cuda().eval()
    reason = packing_unsupported_reason(model)
    if reason is not None:
        sys.exit(f"{attn}: packing refused: {reason}")
    with torch.no_grad():
        alone = torch.cat([token_logprobs(model, {k: v.cuda() for k, v in collate["alone"]([f])["grad"].items()})
                           for f in features])
        # flash attention's varlen kernel reads packed position_ids only at batch size 1: one row there.
        for layout in ("one row", "bounded rows") if attn == "sdpa" else ("one row",):
            block = collate[layout](features)["grad"]
            packed = token_logprobs(model, {k: v.cuda() for k, v in block.items()})
            # Bounded rows list the tokens in row order: put them back in feature order to compare.
            order = (block["example_index"] * 10_000 + block["token_index"]).argsort()
            error = float((packed[order.cuda()] - alone).abs().max())
            print(f"{attn}, {layout} {tuple(block['input_ids'].shape)}: packed vs alone max |diff| {error:.4f} "
                  f"over {packed.numel()} tokens")
            if not error < 0.1:  # bf16 rounding differs between layouts; attending across rows shows as > 1
                sys.exit(f"{attn}, {layout}: packed rows differ from the rows alone ({error})")
EOF

step "done in $((SECONDS - START)) s"
if (( DRY_RUN )); then
  echo "gpu_check: dry run: preconditions checked, nothing ran" >&2
  exit 0
fi
if (( ${#SKIPPED[@]} )); then
  printf 'SKIPPED: %s\n' "${SKIPPED[@]}" >&2
  exit 3
fi
echo "gpu_check: all paths ran" >&2
