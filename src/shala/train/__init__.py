"""Training: GRPO (``grpo``, with ``audio_grpo`` for speech + text), the
supervised warm-up (``sft``) and the rewards (``rewards``) (docs/design.md §5).

What the trainers share is apart: the job skeleton each trainer fills in
with its recipe (``job``: settings, device, model, save, run.json), the
device and threads a run uses (``device``), the model as training loads it
(``model_setup``), LoRA (``lora``), the run record's helpers
(``run_record``), and checkpoints with the step log (``trainlog``).
"""
