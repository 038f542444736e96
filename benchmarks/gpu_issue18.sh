#!/usr/bin/env bash
# Issue 18's figures on one GPU machine, in one run (docs/BENCHMARKS.md, "Planning decisions and ensemble steps"):
# after `make demo` (runs/demo) and a Pong token store encoded by the demo tokenizer (runs/pong/tokens), from the
# repository root:
#
#   DEVICE=cuda OUT=/tmp/gpu bash benchmarks/gpu_issue18.sh        (SMOKE=1: every part, tiny, in a few minutes)
#
# A GPU image with torch and lightning but not this project's other dependencies needs their wheels on PYTHONPATH
# first: ale-py, gymnasium, Farama-Notifications, jsonargparse, docstring_parser, typeshed_client, pydantic,
# pydantic_core, annotated-types, typing-inspection, vector-quantize-pytorch, einx, frozendict, torch-einops-utils,
# loguru, datasets, dill, multiprocess (pip download --no-deps ... -d .whl; pip install --no-index --target /tmp/site).
#
# Parts, side by side, each with its own log and time limit:
#   1. ensemble: world models with seeds 1-4 trained as the demo's (configs/world_model/demo.yaml) on the GPU, then
#      `iris-wm ensemble report` of 3 (seeds 0-2) and 5 members (0-4) against Pong;
#   2. mpc: `iris-wm evaluate --planner` with the demo agent on the demo's 32 evaluation seeds, two planner sizes;
#   3. safety: benchmarks/safety_validation.py, real runs on the CPU, imagination on the GPU, 8 / 32 / 64 / 128
#      imagined rollouts a start against the same real runs;
#   4. planning: benchmarks/planning.py on the GPU (decision time at N = 64 / 256 / 512 for 1 and 32 environments);
#   5. agents: the demo's agent stage with seeds 1 and 2, each played alone and with the smaller planner.
# Every part stops at the deadline, TOTAL seconds after the start. Everything lands in $OUT/results.tgz, and
# $OUT/log.txt holds the end of every part's output.
set -u
OUT=${OUT:-/tmp/gpu-issue18}
DEVICE=${DEVICE:-cuda}
SMOKE=${SMOKE:-0}
WORK=$OUT/work
mkdir -p "$OUT" "$WORK"
PY=${PY:-python3}
ACCELERATOR=$([ "$DEVICE" = cpu ] && echo cpu || echo gpu)
AGENT=runs/demo/agent/checkpoints/last.ckpt
MEMBER0=runs/demo/world_model/checkpoints/last.ckpt
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=${OMP_NUM_THREADS:-4}
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; lscpu | grep "Model name"; nproc; } \
    >"$WORK/machine.txt" 2>&1

if [ "$SMOKE" = 1 ]; then
    WM_STEPS=10; SEEDS="1 2"; WINDOWS=8; EPISODES=2; ENVS=2; STARTS=4; ROLLOUTS="2 4"; TOTAL=${TOTAL:-300}
    PLANNERS=("{samples: 8, elites: 2, iterations: 1, prior_samples: 2, horizon: 5, end_penalty: 1}")
    BENCH=(--samples 16 --envs 1 --repeats 1); EVAL=(--env.max_episode_steps 100); AGENT_STEPS=5
else
    WM_STEPS=1000; SEEDS="1 2 3 4"; WINDOWS=256; EPISODES=32; ENVS=32; STARTS=200; ROLLOUTS="8 32 64 128"
    TOTAL=${TOTAL:-500}; AGENT_STEPS=250
    PLANNERS=("{samples: 64, elites: 8, iterations: 3, prior_samples: 16, horizon: 5, end_penalty: 1}"
              "{samples: 256, elites: 32, iterations: 6, prior_samples: 24, horizon: 5, end_penalty: 1}")
    BENCH=(--samples 64 256 512 --envs 1 32 --repeats 3); EVAL=(--env.max_episode_steps 2000)
fi

DEADLINE=$(($(date +%s) + TOTAL))
left() { local s=$((DEADLINE - $(date +%s))); echo $((s > 5 ? s : 5)); }  # seconds to the deadline

ensemble() {
    local members=("$MEMBER0") seed
    for seed in $SEEDS; do
        local dir=$WORK/member$seed
        timeout "$(left)" $PY -m iris_wm.cli world-model fit --config configs/world_model/demo.yaml \
            --data.root runs/demo/tokens --seed_everything "$seed" --trainer.accelerator "$ACCELERATOR" \
            --trainer.max_steps "$WM_STEPS" --trainer.enable_progress_bar false \
            --trainer.default_root_dir "$dir" --trainer.logger.init_args.save_dir "$dir" \
            --trainer.callbacks.init_args.dirpath "$dir/checkpoints" >"$dir.log" 2>&1 &
    done
    wait
    for seed in $SEEDS; do members+=("$WORK/member$seed/checkpoints/last.ckpt"); done
    local size
    for size in 3 5; do
        [ ${#members[@]} -ge $size ] || continue
        local list
        list=$(IFS=,; echo "${members[*]:0:$size}")
        $PY -m iris_wm.cli ensemble build --members "[$list]" --out "$WORK/ensemble$size" &&
            timeout "$(left)" $PY -m iris_wm.cli ensemble report --ensemble "$WORK/ensemble$size" \
                --tokens runs/demo/tokens --other runs/pong/tokens --windows "$WINDOWS" --device "$DEVICE" \
                --out "$WORK/uncertainty$size.json"
    done
    # The safety check again, imagined in the largest ensemble, with its unknown gate.
    local largest
    largest=$(ls -d "$WORK"/ensemble? 2>/dev/null | tail -n 1)
    [ -n "$largest" ] || return
    # shellcheck disable=SC2086
    timeout "$(left)" $PY benchmarks/safety_validation.py --demo runs/demo --starts "$STARTS" --device "$DEVICE" \
        --world_model "$largest" --imagined_rollouts $ROLLOUTS --json "$WORK/safety_ensemble.json"
}

mpc() {
    local i=0 planner
    for planner in "${PLANNERS[@]}"; do
        timeout "$(left)" $PY -m iris_wm.cli evaluate --agent "$AGENT" --device "$DEVICE" --episodes "$EPISODES" \
            --num_envs "$ENVS" --seed 1000 --temperature 0.5 --out "$WORK/mpc$i.json" "${EVAL[@]}" \
            --planner "$planner" >"$WORK/mpc$i.log" 2>&1 &
        i=$((i + 1))
    done
    wait
}

safety() {
    # shellcheck disable=SC2086  # the rollout counts are several arguments
    timeout "$(left)" $PY benchmarks/safety_validation.py --demo runs/demo --starts "$STARTS" --device "$DEVICE" \
        --imagined_rollouts $ROLLOUTS --json "$WORK/safety.json"
}

planning() {
    timeout "$(left)" $PY benchmarks/planning.py --device "$DEVICE" "${BENCH[@]}" \
        --json "$WORK/planning.json" --markdown "$WORK/PLANNING.md"
}

agents() {
    # The demo's agent stage (configs/agent/demo.yaml, 250 updates) again with seeds 1 and 2 on the demo's models, each
    # then played on the demo's 32 evaluation games alone and as the prior and critic of the smaller planner.
    local seed
    for seed in 1 2; do
        (
            local dir=$WORK/agent$seed
            timeout "$(left)" $PY -m iris_wm.cli agent fit --config configs/agent/demo.yaml \
                --data.root runs/demo/tokens --seed_everything "$seed" --trainer.accelerator "$ACCELERATOR" \
                --trainer.max_steps "$AGENT_STEPS" --trainer.enable_progress_bar false \
                --model.world_model "$AGENT" --model.tokenizer "$AGENT" \
                --trainer.default_root_dir "$dir" --trainer.logger.init_args.save_dir "$dir" \
                --trainer.callbacks.init_args.dirpath "$dir/checkpoints" >"$dir.log" 2>&1
            timeout "$(left)" $PY -m iris_wm.cli evaluate --agent "$dir/checkpoints/last.ckpt" --device "$DEVICE" \
                --episodes "$EPISODES" --num_envs "$ENVS" --seed 1000 --temperature 0.5 "${EVAL[@]}" \
                --out "$WORK/agent$seed.json" >>"$dir.log" 2>&1
            timeout "$(left)" $PY -m iris_wm.cli evaluate --agent "$dir/checkpoints/last.ckpt" --device "$DEVICE" \
                --episodes "$EPISODES" --num_envs "$ENVS" --seed 1000 --temperature 0.5 "${EVAL[@]}" \
                --planner "${PLANNERS[0]}" \
                --out "$WORK/agent${seed}_mpc.json" >>"$dir.log" 2>&1
        ) &
    done
    wait
}

begin=$(date +%s)
agents >"$WORK/agents.log" 2>&1 &
ensemble >"$WORK/ensemble.log" 2>&1 &
mpc >"$WORK/mpc.log" 2>&1 &
safety >"$WORK/safety.log" 2>&1 &
planning >"$WORK/planning.log" 2>&1 &
wait
echo "all parts: $(($(date +%s) - begin)) s" >>"$WORK/machine.txt"
for f in "$WORK"/*.log; do echo "=== $f"; tail -n 25 "$f"; done >"$OUT/log.txt" 2>&1
tar -czf "$OUT/results.tgz" -C "$WORK" --exclude='member*/checkpoints' --exclude='agent*/checkpoints' --exclude='ensemble?' . 2>/dev/null
cat "$WORK/machine.txt"
grep -h -A3 '"mean"' "$WORK"/mpc*.json 2>/dev/null | head -20
