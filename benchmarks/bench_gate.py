"""The gate's error rates and its own speed, on simulated paired evals with fixed seeds.

Prints the false-promotion rate and the power table (true gain 0, 2, 5, 10 points x n 100, 500, 2,000) at
discordance rates q 0.10, 0.15, 0.40; the promotions over 20 chained cycles of no-better candidates, with
and without the look correction; and the time per decision on 2,000 prompts x 10 slices (target < 1 s).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from rftflow.scoring.gate import GateConfig, decide
from rftflow.scoring.gate_simulation import (
    HEALTHY_DRIFT,
    HEALTHY_TRAINING,
    chained_promotions,
    evidence_of,
    promotion_rate,
    simulate_pairs,
)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--trials", type=int, default=1000, help="simulated evals per cell")
    ap.add_argument("--chains", type=int, default=500, help="chains of 20 cycles")
    args = ap.parse_args(argv)

    gains, sizes = (0.0, 0.02, 0.05, 0.10), (100, 500, 2000)
    for q in (0.10, 0.15, 0.40):
        print(f"\nshare promoted, {args.trials} simulated evals per cell, discordance q = {q:.2f} "
              "(gain 0 = false promotions; target <= 0.05; +5 at n=500, q=0.15: target >= 0.80)")
        print(f"{'true gain':>10}" + "".join(f"{f'n={n}':>10}" for n in sizes))
        for gain in gains:
            cells = [promotion_rate(n, gain, max(q, gain), args.trials, seed=int(1000 * q + 100 * gain + n))
                     for n in sizes]
            print(f"{gain * 100:>+9.0f}p" + "".join(f"{c:>10.3f}" for c in cells))

    print(f"\n20 chained cycles of no-better candidates on one eval set ({args.chains} chains, n=500, q=0.15)")
    for label, cfg in (("look correction on (default)", GateConfig()),
                       ("look correction off", GateConfig(look_correction=False))):
        result = chained_promotions(args.chains, 20, 500, 0.15, seed=7, cfg=cfg)
        dist = np.bincount(result.promotions)
        print(f"  {label:30} chains with 0 promotions: {result.share_without_promotion:.3f} (target >= 0.95); "
              f"promotions per chain: " + ", ".join(f"{k}: {int(v)}" for k, v in enumerate(dist) if v))

    rng = np.random.default_rng(0)
    base, cand = simulate_pairs(2000, 0.6, 0.03, 0.15, rng)
    for i, (b, c) in enumerate(zip(base, cand, strict=True)):
        b["metadata"] = c["metadata"] = {"category": f"c{i % 10}"}
    print("\ntime per decision, 2,000 prompts x 10 slices (target < 1 s):")
    for metric in ("pass_at_1", "mean_reward"):
        cfg = GateConfig(metric=metric)
        times = []
        for _ in range(5):
            t0 = time.perf_counter()
            decide(evidence_of(base, "baseline"), evidence_of(cand, "candidate"), None, HEALTHY_TRAINING, cfg,
                   cycle=1, max_cycles=1, drift=HEALTHY_DRIFT)
            times.append(time.perf_counter() - t0)
        print(f"  {metric:12} median {np.median(times) * 1000:7.1f} ms  (5 runs; mean_reward: "
              f"{cfg.resamples:,} bootstrap + sign-flip resamples per comparison)" if metric == "mean_reward"
              else f"  {metric:12} median {np.median(times) * 1000:7.1f} ms  (5 runs; exact McNemar)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
