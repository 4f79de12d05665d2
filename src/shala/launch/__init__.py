"""Launch: what runs before a GPU training job and how it is started.

The launcher command (``launcher``), ``shala preflight`` (``preflight``) and
its checks: the launch config (``launch_check``), the model's shape
(``model_shape``), the per-GPU memory estimate (``gpu_memory``), the fit to
the hardware with its fallbacks (``fit``) and the disk the runs need (``disk``).
"""
