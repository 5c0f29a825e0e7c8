"""Where bf16 autocast pays on this CPU: one Linear + ReLU layer, forward and backward (a
training step) or forward alone (``--forward``: inference, under ``torch.inference_mode``), fp32
vs bf16 autocast (weights fp32, cast at each forward, as in exfm), over batch x width.

    .venv/bin/python bench/bf16.py [--threads 2] [--repeats 5] [--forward]

Prints, per (batch, in, out), the fp32 and bf16 time of one step of the layer (min of
``--repeats`` rounds of ``--steps`` steps) and their ratio, next to the layer's work (batch x in x
out multiply-adds), which VMs compare with ``models.vm_bf16_min_work`` in training and inference
alike (exfm.models.blocks.cpu_bf16_layers). On a CPU without native bf16 (no AVX512-BF16, no
AMX) it says so and stops: autocast is never used there. Results are written to
bench/out/bf16.json (bf16_forward.json with ``--forward``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from torch import nn

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

BATCHES = [100, 512, 4096]
FORWARD_BATCHES = [512, 4096, 8192]  # 8192: the inference batch (predict_tensors, predict_table)
SHAPES = [(32, 16), (64, 32), (128, 64), (256, 128), (144, 256), (512, 256), (1024, 512)]


def step_times(batch: int, d_in: int, d_out: int, steps: int, repeats: int,
               forward: bool = False) -> tuple[float, float]:
    """Seconds per training step of Linear(d_in, d_out) + ReLU + a sum (``forward``: per
    inference forward of Linear + ReLU, its output back in fp32), fp32 and bf16 autocast, min over
    ``repeats`` rounds; the two alternate within each round."""
    torch.manual_seed(0)
    layer = nn.Linear(d_in, d_out)
    x = torch.randn(batch, d_in, requires_grad=not forward)
    best = {False: float("inf"), True: float("inf")}
    for r in range(repeats + 1):  # round 0 warms up
        for bf16 in (False, True):
            t0 = time.perf_counter()
            for _ in range(steps):
                if forward:
                    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16,
                                                                enabled=bf16):
                        torch.relu_(layer(x)).float()
                    continue
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                    y = torch.relu(layer(x))
                y.float().sum().backward()
            dt = (time.perf_counter() - t0) / steps
            if r:
                best[bf16] = min(best[bf16], dt)
    return best[False], best[True]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--forward", action="store_true",
                    help="forward alone, under inference_mode (inference), at batches "
                    f"{FORWARD_BATCHES}")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    from exfm.config import load_config
    from exfm.models.blocks import cpu_bf16_native

    BF16_MIN_WORK = load_config(None, [], env={}).models.vm_bf16_min_work

    if not cpu_bf16_native():
        print("this CPU computes bf16 only by emulation (no AVX512-BF16, no AMX): exfm never "
              "autocasts to bf16 here; nothing to measure")
        return 0
    rows = []
    print(f"{'batch':>6} {'in':>5} {'out':>5} {'work (M)':>9} {'fp32 us':>9} {'bf16 us':>9} "
          f"{'bf16 speed-up':>14}  {'auto':>5}")
    print("forward alone (inference)" if args.forward else "training step (forward + backward)")
    for b in FORWARD_BATCHES if args.forward else BATCHES:
        for d_in, d_out in SHAPES:
            f, h = step_times(b, d_in, d_out, args.steps, args.repeats, args.forward)
            work = b * d_in * d_out
            auto = work >= BF16_MIN_WORK
            rows.append({"batch": b, "in": d_in, "out": d_out, "work": work, "fp32_s": f,
                         "bf16_s": h, "speedup": f / h, "auto_bf16": auto})
            print(f"{b:>6} {d_in:>5} {d_out:>5} {work / 1e6:>9.2f} {f * 1e6:>9.1f} {h * 1e6:>9.1f} "
                  f"{f / h:>13.2f}x  {'bf16' if auto else 'fp32':>5}")
    paid = [r for r in rows if r["auto_bf16"]]
    kept = [r for r in rows if not r["auto_bf16"]]
    print(f"\nmodels.vm_bf16_min_work default {BF16_MIN_WORK / 1e6:g}M multiply-adds per layer "
          "forward")
    if paid:
        print(f"layers auto puts in bf16: speed-up {min(r['speedup'] for r in paid):.2f}x"
              f"..{max(r['speedup'] for r in paid):.2f}x")
    if kept:
        print(f"layers auto keeps in fp32: bf16 would have been {min(r['speedup'] for r in kept):.2f}x"
              f"..{max(r['speedup'] for r in kept):.2f}x")
    out = HERE / "out"
    out.mkdir(exist_ok=True)
    name = "bf16_forward.json" if args.forward else "bf16.json"
    (out / name).write_text(json.dumps({"threads": args.threads, "forward": args.forward,
                                        "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
