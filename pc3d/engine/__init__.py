"""Training and evaluation machinery: the trainer, the evaluator, atomic checkpoints with exact
resume, torchrun DDP (NCCL on CUDA, gloo on CPU) and logging (console progress, TensorBoard).
"""
