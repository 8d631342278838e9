"""Training GLIDE at any scale: from a 16x16 CPU test run to the paper's 3.5B model on a pod.

Modules, one idea each: ``experiment`` (the experiment dataclasses and
``--set`` overrides), ``state`` (TrainState, AdamW, EMA, skipped updates),
``step`` (pure train steps for the U-Nets and the noisy CLIP, one maker per
model family), ``sharding`` (mesh, logical-to-mesh layouts, the batch layout,
born-sharded init, jitted step, multi-host start), ``checkpointing`` (Orbax
saves and fall-back restore), ``inputs`` (source, tokenizer, iterator, preview
inputs), ``warm_start`` (starting from a trained model: the same model, or
inpainting widening), ``metrics`` (console, TensorBoard, JSONL), ``preview``
(sample grids) and ``loop`` (the loop the ``experiments/train_*.py`` entry
points run, with its resume order).
"""
