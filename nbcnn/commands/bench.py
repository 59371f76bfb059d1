"""``nbcnn bench``: images per second for presets x batch sizes x backends, against PyTorch;
``--profile``: every layer's forward and gradient times as a fraction of the machine's peak;
``--contention``: several trainings at once against one alone. Every table names the CPU, its
vector width and the peak measured in the same run (details in ``machine.json``)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_parser(sub) -> None:
    p = sub.add_parser("bench", help="measure training and inference speed", description=__doc__,
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--archs", nargs="+", default=None, help="presets (default: mnist-simple mnist-complex cifar-small cifar-resnet20)")
    p.add_argument("--batch-sizes", nargs="+", type=int, default=None, help="default: 10 64 256")
    p.add_argument("--backends", nargs="+", default=None, help="default: numba and opencl if present")
    p.add_argument("--no-torch", action="store_true", help="leave PyTorch out even if installed")
    p.add_argument("--torch-device", default="cpu", choices=["cpu", "cuda"],
                   help="where PyTorch runs: cuda times it on the GPU in float32 (no TF32), the "
                        "peer for OpenCL on that GPU")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--min-seconds", type=float, default=0.3, help="length of one timed repeat")
    p.add_argument("--threads", type=int, default=None, help="default: all cores")
    p.add_argument("--out", default="results/bench", help="folder for the tables and the figure")
    p.add_argument("--quick", action="store_true",
                   help="one small configuration, few repeats (a smoke test, under a minute)")
    p.add_argument("--startup", action="store_true",
                   help="also time a fresh process to its first trained batch, cold and warm cache")
    p.add_argument("--profile", action="store_true",
                   help="instead: per layer and pass (forward, input and weight gradients) ms and "
                        "GFLOP/s against the measured peak, into profile.csv")
    p.add_argument("--contention", type=int, nargs="?", const=2, default=None, metavar="COPIES",
                   help="instead: COPIES trainings at once (numba, default 2) against one alone, "
                        "into contention.csv")
    p.add_argument("--contention-seconds", type=float, default=10.0,
                   help="how long each training of --contention is timed")
    p.add_argument("--peak-size", type=int, default=4096,
                   help="matrix size of the sgemm that measures the peak (--quick: 1024)")


def _fmt(v):
    return f"{v:,.2f}"


def run(args) -> int:
    import nbcnn
    from nbcnn import bench
    from nbcnn.arch import PRESETS

    archs = args.archs or (["mnist-simple"] if args.quick else bench.ARCHS)
    batches = args.batch_sizes or ([64] if args.quick else bench.BATCH_SIZES)
    for arch in archs:
        if arch not in PRESETS:
            raise ValueError(f"unknown preset {arch!r}; expected one of {', '.join(PRESETS)}")
    for n in batches:
        if n < 1:
            raise ValueError(f"batch sizes must be >= 1, got {n}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.contention is not None:
        # the copies choose their own threads (nbcnn's core sharing) unless --threads is given
        info = bench.machine()
        print(bench.machine_header(info))
        table = bench.with_machine(bench.run_contention(
            archs, batches, args.contention, args.contention_seconds, args.threads), info)
        if not (out / "machine.json").exists():     # (the runs that measure the peak own it)
            _write_machine(out, info)
        table.to_csv(out / "contention.csv", index=False)
        print(table[["arch", "batch_size", "run", "copy", "images_per_second", "threads_at_end",
                     "total_images_per_second", "ratio_to_alone"]]
              .to_string(index=False, float_format=_fmt))
        print(f"\npolicy: {table.policy.iloc[0]}\nwrote {out / 'contention.csv'}")
        return 0

    # a fixed thread count: nbcnn's core sharing must not change it during the measurement
    nbcnn.set_num_threads(args.threads or nbcnn.threads.max_threads())
    quick = args.quick
    info = bench.machine(bench.measure_peak(1024 if quick else args.peak_size,
                                            repeats=2 if quick else 3))
    _write_machine(out, info)
    print(bench.machine_header(info) + "\n")
    timing = dict(warmup=1 if quick else 3, repeats=2 if quick else args.repeats,
                  min_seconds=0.05 if quick else args.min_seconds)
    if args.profile:
        table = bench.with_machine(bench.run_profile(
            archs, batches, args.backends or ["numba"], info["peak_gflops"], **timing), info)
        table.to_csv(out / "profile.csv", index=False)
        print(bench.profile_summary(table).to_string(index=False, float_format=_fmt))
        print(f"\nfwd/bwd: forward and whole backward ms; share: of the layers' time; "
              f"dx/dw: input / weight gradient; *_peak: fraction of the measured peak\n"
              f"wrote {out / 'profile.csv'}")
        return 0
    table = bench.with_machine(bench.run_benchmark(archs, batches, args.backends,
                                                   torch_peer=not args.no_torch,
                                                   torch_device=args.torch_device, **timing), info)
    table.to_csv(out / "bench.csv", index=False)
    bench.plot(table, out / "bench.png")
    cols = ["arch", "batch_size", "mode", "backend", "images_per_second", "ips_min", "ips_max",
            "gflops", "ratio_to_torch", "peak_step_mb"]
    print(table[cols].to_string(index=False, float_format=_fmt))
    print(f"\nBLAS: {table.blas.iloc[0]}; threads: {table.threads.iloc[0]}")
    if args.startup:
        import pandas as pd
        startup = bench.with_machine(pd.DataFrame([bench.time_to_first_batch(arch)
                                                   for arch in archs]), info)
        startup.to_csv(out / "startup.csv", index=False)
        print("\ntime to the first trained batch (fresh process):")
        print(startup.drop(columns=list(bench.MACHINE_COLUMNS))
              .to_string(index=False, float_format=lambda v: f"{v:.2f}"))
    print(f"\nwrote {out / 'bench.csv'} and {out / 'bench.png'}")
    return 0


def _write_machine(out: Path, info: dict) -> None:
    (out / "machine.json").write_text(json.dumps(info, indent=2) + "\n")
