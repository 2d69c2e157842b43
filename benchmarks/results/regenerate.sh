#!/bin/sh
# Rebuild docs/performance.md from the stored JSON (run from the repository root).
python benchmarks/performance_doc.py --before benchmarks/results/rp_before.json --after benchmarks/results/rp_after.json \
    --extra "Later run, NOT at the same time (absolute seconds not comparable; read the ratios): the untouched branch at 1k vs every change incl. settle_heap at 1k and 10k=benchmarks/results/rp_before_1k_quiet.json,benchmarks/results/rp_after_gc.json" \
    --extra "Final run: every change, floors measured right after each round (the most reliable ratios here)=,benchmarks/results/rp_final.json" \
    --trecs benchmarks/results/trecs_side.json --gpu benchmarks/results/gpu_h200 --soak benchmarks/results/soak_1000.txt --notes benchmarks/results/notes.md --out docs/performance.md
