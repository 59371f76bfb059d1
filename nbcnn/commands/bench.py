"""``nbcnn bench``: images per second for presets x batch sizes x backends, against PyTorch."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(sub) -> None:
    p = sub.add_parser("bench", help="measure training and inference speed", description=__doc__,
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--archs", nargs="+", default=None, help="presets (default: mnist-simple mnist-complex cifar-small cifar-resnet20)")
    p.add_argument("--batch-sizes", nargs="+", type=int, default=None, help="default: 10 64 256")
    p.add_argument("--backends", nargs="+", default=None, help="default: numba and opencl if present")
    p.add_argument("--no-torch", action="store_true", help="leave PyTorch out even if installed")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--min-seconds", type=float, default=0.3, help="length of one timed repeat")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", default="results/bench", help="folder for bench.csv and bench.png")
    p.add_argument("--quick", action="store_true",
                   help="one small configuration, few repeats (a smoke test, under a minute)")
    p.add_argument("--startup", action="store_true",
                   help="also time a fresh process to its first trained batch, cold and warm cache")


def run(args) -> int:
    import nbcnn
    from nbcnn import bench
    from nbcnn.arch import PRESETS

    if args.threads:
        nbcnn.set_num_threads(args.threads)
    archs = args.archs or (["mnist-simple"] if args.quick else bench.ARCHS)
    batches = args.batch_sizes or ([64] if args.quick else bench.BATCH_SIZES)
    for arch in archs:
        if arch not in PRESETS:
            raise ValueError(f"unknown preset {arch!r}; expected one of {', '.join(PRESETS)}")
    table = bench.run_benchmark(archs, batches, args.backends, torch_peer=not args.no_torch,
                                warmup=1 if args.quick else 3,
                                repeats=2 if args.quick else args.repeats,
                                min_seconds=0.05 if args.quick else args.min_seconds)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "bench.csv", index=False)
    bench.plot(table, out / "bench.png")
    cols = ["arch", "batch_size", "mode", "backend", "images_per_second", "ips_min", "ips_max",
            "gflops", "ratio_to_torch", "peak_step_mb"]
    print(table[cols].to_string(index=False, float_format=lambda v: f"{v:,.2f}"))
    print(f"\nBLAS: {table.blas.iloc[0]}; threads: {table.threads.iloc[0]}")
    if args.startup:
        import pandas as pd
        startup = pd.DataFrame([bench.time_to_first_batch(arch) for arch in archs])
        startup.to_csv(out / "startup.csv", index=False)
        print("\ntime to the first trained batch (fresh process):")
        print(startup.to_string(index=False, float_format=lambda v: f"{v:.2f}"))
    print(f"\nwrote {out / 'bench.csv'} and {out / 'bench.png'}")
    return 0
