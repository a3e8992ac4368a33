"""Inference over sequences: readers of every input kind (sources), per-task output writers (outputs) and
the streaming loop with per-stage latency (stream), the prepare step both share (prepare), and a run as a
Python function of clouds in memory (predictor: ``pc3d.Predictor``). ``tools/infer.py`` is its command line."""
