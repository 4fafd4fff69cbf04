"""Benchmarks of arcloss, run from the repository root as modules:

    python -m benchmarks.face            # the main job: face verification on held-out identities
    python -m benchmarks.face.plot DIR   # its figures, again, from DIR/results.json
    python -m benchmarks.speed           # speed and memory against plain softmax, across class counts
    python -m benchmarks.speed.plot      # its figure, from benchmarks/results/speed_memory.csv
    python -m benchmarks.distributed_memory
    python -m benchmarks.toy_2d
    python -m benchmarks.plot_margins

Shared helpers (machine, timing, memory, the one CSV schema): :mod:`benchmarks.common`. Baseline losses shared
by the speed and face benchmarks: :mod:`benchmarks.baselines`.
"""
