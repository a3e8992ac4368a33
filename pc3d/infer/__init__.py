"""Inference over sequences: readers of every input kind (sources), per-task output writers (outputs) and
the streaming loop with per-stage latency (stream). ``tools/infer.py`` is its command line."""
