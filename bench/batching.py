"""Batching: 4 compatible jobs rendered in one pipeline call vs one call each (throughput ratio).

    .venv/bin/python bench/batching.py [--size 64] [--steps 8] [--rounds 5] [--model DIR]

Compatible jobs (equal batch keys: same model, size, sampler, steps, CFG) differ only in prompt
and seed, as the worker claims them. Both ways run on one warm `Engine` (the tiny offline model
unless --model is given), alternating round by round after a warm-up, so load on this shared
machine hits both alike. Prints jobs per second each way and their ratio.
"""

import sys
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parent.parent)  # run from anywhere in the checkout

import tempfile  # noqa: E402
import time  # noqa: E402

from bench.tiny_engine import engine_arguments, warm_engine  # noqa: E402

JOBS = 4  # the batch size the benchmark is about (engine.max_batch's default)


def main() -> None:
    args = engine_arguments(__doc__.splitlines()[0]).parse_args()

    import torch

    from engine.diffusion.params import from_request

    with tempfile.TemporaryDirectory() as tmp:
        # 1. one warm engine and four compatible requests
        config, engine = warm_engine(args, Path(tmp))
        jobs = [
            from_request(
                {"prompt": f"a mascot poster {n}", "seed": n}, config.generation, config.limits
            )
            for n in range(JOBS)
        ]
        assert len({job.batch_key() for job in jobs}) == 1

        def batched() -> None:
            engine.generate_batch(jobs)

        def one_by_one() -> None:
            for job in jobs:
                engine.txt2img(job)

        # 2. warm up, then alternate the two ways
        batched(), one_by_one()
        elapsed = {batched: 0.0, one_by_one: 0.0}
        for _ in range(args.rounds):
            for way in elapsed:
                began = time.perf_counter()
                way()
                elapsed[way] += time.perf_counter() - began

    # 3. report
    rate = {way.__name__: JOBS * args.rounds / seconds for way, seconds in elapsed.items()}
    print(
        f"device {engine.device}, torch threads {torch.get_num_threads()}, {args.size}x{args.size},"
        f" {args.steps} steps, {args.rounds} rounds of {JOBS} jobs"
    )
    print(f"one by one: {rate['one_by_one']:.2f} jobs/s")
    print(f"batched:    {rate['batched']:.2f} jobs/s")
    print(f"ratio batched / one by one: {rate['batched'] / rate['one_by_one']:.2f}")


if __name__ == "__main__":
    main()
