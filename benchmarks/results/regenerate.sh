#!/bin/sh
# Rebuild docs/performance.md from the stored JSON (run from the repository root).
python benchmarks/performance_doc.py --before benchmarks/results/rp_before.json --after benchmarks/results/rp_after.json \
    --extra "Later run, NOT at the same time (absolute seconds not comparable; read the ratios): the untouched branch at 1k vs every change incl. settle_heap at 1k and 10k=benchmarks/results/rp_before_1k_quiet.json,benchmarks/results/rp_after_gc.json" \
    --extra "Final run of the last session: every change, floors measured right after each round=,benchmarks/results/rp_final.json" \
    --extra "Final run (this session: foreach optimisers, per-minibatch popularity features, the allocator fitted to the size; quiet machine; read these ratios first)=,benchmarks/results/rp_final2.json" \
    --extra "100k per phase, before heap_reuse (the fits under the 1 MiB mmap pin) and after (another run, later: read the ratios)=benchmarks/results/rp_100k_pinned.json,benchmarks/results/rp_100k.json" \
    --extra "The old demo's world (2,000 x 2,000, 3,000 requests per round): the floor of the demo's work=,benchmarks/results/rp_demo2k.json" \
    --trecs benchmarks/results/trecs_side.json --trecs benchmarks/results/trecs_side2.json --trecs benchmarks/results/trecs_side_10k.json --demo benchmarks/results/demo_equal_work.json \
    --gpu benchmarks/results/gpu_h200 --soak benchmarks/results/soak_1000.txt --notes benchmarks/results/notes.md --out docs/performance.md
