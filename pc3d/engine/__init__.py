"""Training and evaluation machinery; each module does one thing (import what you use: nothing is
imported here, so `import pc3d.engine` is free).

- settings     TrainSettings: the `train:` node of a run, checked (types, ranges)
- trainer      `Trainer(model, train_set, optimizer=..., settings=TrainSettings(...), run_dir=...).fit(resume)`:
               epochs or iterations, accumulation, clipping, autocast, EMA, periodic evaluation,
               best checkpoint, clean stop on SIGINT / SIGTERM, exact resume
- evaluator    `evaluate(model, dataset, ...)`: sharded prediction, gathering to rank 0, `dataset.evaluate`
- checkpoint   atomic saves, last-K + best.pt, weights_only loading, `latest` that skips bad files
- schedule     per-step lr schedules with warm-up: WarmupCosine, OneCycle, WarmupStep
- optim        parameter groups (no decay on biases / norms), precision (fp32 / bf16 / fp16), clipping
- ema          ModelEMA
- data         resumable rank-sharded samplers, per-sample seeding, loaders, `to_device`
- seeding      seeds and weights_only-safe RNG states
- distributed  torchrun DDP (NCCL on CUDA, gloo on CPU), gathering, model wrapping
- monitor      log file, console progress (tqdm), TensorBoard scalars, metrics JSON / markdown table
- signals      SIGINT / SIGTERM -> stop at the next step boundary
- runner       hydra config -> parts -> train / test (tools/train.py, tools/test.py)

Contracts with models and datasets: see the trainer, evaluator and data module docstrings.
"""
