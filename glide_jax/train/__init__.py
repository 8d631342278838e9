"""Training GLIDE at any scale: from a 16x16 CPU test run to the paper's 3.5B model on a pod.

Modules, one idea each: ``config`` (the experiment dataclasses, ``--set``
overrides, JSON), ``state`` (TrainState, AdamW, EMA, skipped updates),
``step`` (pure train steps for the U-Nets and the noisy CLIP), ``sharding``
(mesh, logical-to-mesh layouts, born-sharded init, jitted step, multi-host
start), ``checkpointing`` (Orbax saves, fall-back restore, loading for
sampling), ``data`` (source, tokenizer, iterator, preview inputs),
``finetune`` (inpainting init from a trained model), ``metrics`` (console,
TensorBoard, JSONL), ``preview`` (sample grids) and ``loop`` (the loop the
``experiments/train_*.py`` entry points run).
"""
