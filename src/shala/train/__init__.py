"""Training: GRPO (``grpo``, with ``audio_grpo`` for speech + text), the
supervised warm-up (``sft``) and the rewards (``rewards``) (docs/design.md §5).

What the trainers share is apart: the device and threads a run uses
(``device``), the model as training loads it (``model_setup``), the run
record (``run_record``), and checkpoints with the step log (``trainlog``).
"""
