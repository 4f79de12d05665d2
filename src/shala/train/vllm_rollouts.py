"""GRPO rollouts through vLLM (``training.grpo.use_vllm``, TRL 1.16's
colocate mode), made right on the CPU and on CUDA.

What TRL 1.16 does not do, and this module adds (:func:`build_trainer`):

- **weights**: TRL pushes each parameter with ``model.load_weights`` into
  the live engine. vLLM's CPU backend repacks linear weights after loading,
  so that fails ("'Parameter' object has no attribute 'weight_loader'").
  :func:`push_weights` hands all of them to vLLM's own
  ``reload_weights(weights_iterator=...)``, which loads and repacks layer by
  layer on either backend, then re-ties an output layer that shares the
  embeddings' weight (the reload gives the embedding a new tensor; the LM
  head would keep the old, packed one). An Omni thinker's names are mapped
  to vLLM's (:func:`vllm_weight_name`);
- **dtype**: TRL builds ``LLM(...)`` without one, so vLLM takes the folder's
  config (a float32 policy rolled out in bfloat16: log-prob gap 0.036). The
  engine gets the policy's dtype, and on the CPU an explicit KV cache and
  eager mode (:func:`rollout_llm_kwargs`); threads are the ones training set
  before the engine starts (vLLM's CPU worker pins them then);
- **the constrained answer**: TRL's ``vllm_structured_outputs_regex``, built
  from the skeleton :mod:`shala.model.constrained` forces in ``generate``
  (:func:`shala.model.vllm_engine.skeleton_regex`). vLLM may spell a forced
  literal in other tokens than the skeleton's, so forced tokens are found
  on the text of the token ids vLLM produced (:func:`forced_positions_text`)
  and masked as :func:`shala.model.constrained.mask_forced_tokens` does.

A Qwen2.5-Omni thinker (text items) is served by vLLM's thinker class
(:func:`omni_engine_kwargs`): language-model-only (no audio or vision tower
in the engine, none pushed), from the full Omni folder, or for a saved
thinker from a folder with the full layout's config and dummy weights that
TRL's sync at step 0 overwrites. TRL's colocate rollouts take images, not
audio: audio items are refused before any model loads
(:func:`shala.model.engines.check_rollout_engine`).
"""

from __future__ import annotations

import contextlib
import functools
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from ..model.constrained import DIGITS, JSONSkeleton, mask_forced_tokens
from ..model.loading import OMNI_TOWER_PREFIXES, is_omni, model_type_of
from ..model.vllm_engine import kv_cache_bytes, skeleton_literals, skeleton_regex, stop_engine

#: transformers-5 Omni thinker names -> vLLM's Qwen2.5-Omni thinker names
OMNI_RENAMES = (("model.language_model.", "thinker.model."), ("model.audio_tower.", "thinker.audio_tower."),
                ("model.visual.", "thinker.visual."), ("lm_head.", "thinker.lm_head."))


def vllm_weight_name(name: str, omni: bool) -> str:
    """The name vLLM's model loads ``name`` under (Omni: :data:`OMNI_RENAMES`)."""
    if omni:
        for old, new in OMNI_RENAMES:
            if name.startswith(old):
                return new + name[len(old):]
    return name


def pushed(name: str, omni: bool) -> bool:
    """Whether the sync pushes ``name``: not an Omni tower, which the
    language-model-only engine does not hold (vLLM would skip it)."""
    return not (omni and name.startswith(tuple(OMNI_TOWER_PREFIXES.values())))


def tied_modules(model) -> dict[str, str]:
    """Module name -> the earlier module whose ``weight`` Parameter it shares."""
    import torch

    first: dict[int, str] = {}
    tied = {}
    for name, module in model.named_modules():
        weight = getattr(module, "weight", None)
        if isinstance(weight, torch.nn.Parameter):
            tied[name] = first[id(weight)] if id(weight) in first else None
            first.setdefault(id(weight), name)
    return {k: v for k, v in tied.items() if v is not None}


def push_weights(llm, weights: Iterable[tuple[str, Any]]) -> list[dict[str, str]]:
    """Load ``weights`` (vLLM names) into the in-process engine ``llm`` with
    vLLM's ``reload_weights``, then re-tie (and on the CPU repack) tied
    output layers; returns the re-tied pairs per worker."""
    def reload(worker):
        model = worker.model_runner.get_model()
        tied = tied_modules(model)
        worker.model_runner.reload_weights(weights_iterator=iter(weights))
        modules = dict(model.named_modules())
        for name, source in tied.items():
            module = modules[name]
            module.weight = modules[source].weight
            module.quant_method.process_weights_after_loading(module)
        return tied

    out = llm.collective_rpc(reload)
    llm.reset_prefix_cache()
    return out


def install_weight_sync(trainer, omni: bool) -> dict[str, float]:
    """Replace TRL's colocate ``sync_weights`` with :func:`push_weights` of the
    policy (TRL's own iterator: ZeRO-3 gathers, merged LoRA), the weights
    the engine holds only (:func:`pushed`); returns a live count of syncs,
    their seconds, and the tensors the last one pushed and skipped."""
    gen = trainer.vllm_generation
    stats = {"syncs": 0, "seconds": 0.0, "tensors": 0, "skipped": 0}  # tensors, skipped: of the last sync
    clone = bool(getattr(trainer, "is_deepspeed_enabled", False))  # a gathered shard is freed after its yield

    def weights():
        stats["tensors"] = stats["skipped"] = 0
        for name, param in gen._iter_named_params():  # under ZeRO-3 a skipped tower is still gathered
            if not pushed(name, omni):
                stats["skipped"] += 1
                continue
            stats["tensors"] += 1
            yield vllm_weight_name(name, omni), param.detach().clone() if clone else param.detach()

    def sync_weights():
        t0 = time.perf_counter()
        if gen.enable_sleep_mode:  # as TRL: map the weights' memory before writing them
            gen.llm.wake_up(tags=["weights"])
            gen._llm_weights_sleeping = False
        push_weights(gen.llm, weights())
        stats["syncs"] += 1
        stats["seconds"] += time.perf_counter() - t0

    gen.sync_weights = sync_weights
    return stats


def rollout_llm_kwargs(model, args) -> dict[str, Any]:
    """What TRL's ``LLM(...)`` lacks (module doc): the policy's dtype; for
    an Omni thinker its engine (:func:`omni_engine_kwargs`); on the CPU
    eager mode and a KV cache for one generation batch."""
    import torch

    extra: dict[str, Any] = {"dtype": str(model.dtype).removeprefix("torch.")}
    if is_omni(model.config.model_type):
        extra.update(omni_engine_kwargs(model))
    if not torch.cuda.is_available():
        seqs = args.per_device_train_batch_size * args.steps_per_generation
        extra.update(enforce_eager=True, kv_cache_memory_bytes=kv_cache_bytes(model, seqs, args.vllm_max_model_length))
    return extra


@contextlib.contextmanager
def llm_defaults(extra: dict[str, Any]) -> Iterator[None]:
    """While the trainer is built, TRL's ``LLM`` gets ``extra`` keyword
    arguments, over TRL's own (``model``: an Omni thinker's engine folder)."""
    from trl.generation import vllm_generation

    original = vllm_generation.LLM
    vllm_generation.LLM = lambda *args, **kwargs: original(*args, **{**kwargs, **extra})
    try:
        yield
    finally:
        vllm_generation.LLM = original


def omni_engine_kwargs(model) -> dict[str, Any]:
    """``LLM(...)`` keyword arguments for an Omni thinker's text rollouts.

    ``language_model_only``: no tower in the engine (its memory, its start-up
    profiling, and the video processor, which needs torchvision, all go).
    vLLM builds the thinker only from the full Omni layout (``thinker_config``
    in a ``qwen2_5_omni`` config): a saved thinker (a warm-up's output) gets
    a temporary folder with that config and its other files (no weights)
    and dummy weights, which TRL's first sync (step 0, before any rollout)
    overwrites with every pushed weight; the folder goes at train end."""
    import_omni_thinker()
    extra: dict[str, Any] = {"language_model_only": True}
    folder = Path(model.name_or_path)
    if model_type_of(folder) == "qwen2_5_omni_thinker":
        engine = Path(tempfile.mkdtemp(prefix="shala-vllm-omni-"))
        for f in folder.iterdir():
            if f.is_file() and f.name != "config.json" and ".safetensors" not in f.name:
                (engine / f.name).symlink_to(f.resolve())
        config = {"model_type": "qwen2_5_omni", "architectures": ["Qwen2_5OmniForConditionalGeneration"],
                  "enable_audio_output": False, "thinker_config": model.config.to_dict()}
        (engine / "config.json").write_text(json.dumps(config, indent=1))
        extra.update(model=str(engine), load_format="dummy")
    return extra


def import_omni_thinker() -> None:
    """Make vLLM's Qwen2.5-Omni thinker importable for text rollouts where
    torchvision does not import (vLLM's CPU build without CPU torchvision:
    PyPI's CUDA build does not load against CPU torch). vLLM's module imports
    ``smart_resize`` from transformers' torchvision image processor; its PIL
    twin has the same function, and no image is processed language-model-only.
    The class is registered in this process, so vLLM's architecture check
    (else a subprocess) and the in-process engine both take it."""
    try:
        import torchvision  # noqa: F401
        return
    except (ImportError, RuntimeError):
        pass
    from transformers.models.qwen2_vl import image_processing_pil_qwen2_vl

    sys.modules.setdefault("transformers.models.qwen2_vl.image_processing_qwen2_vl", image_processing_pil_qwen2_vl)
    from vllm import ModelRegistry
    from vllm.model_executor.models.qwen2_5_omni_thinker import Qwen2_5OmniThinkerForConditionalGeneration

    for arch in ("Qwen2_5OmniModel", "Qwen2_5OmniForConditionalGeneration"):
        ModelRegistry.register_model(arch, Qwen2_5OmniThinkerForConditionalGeneration)


def stop_at_train_end(llm, folder: str | None = None):
    """A TrainerCallback that shuts the colocated engine down when training
    ends (:func:`shala.model.vllm_engine.stop_engine`), before the process
    group goes, and removes the engine's temporary ``folder`` (if any)."""
    from transformers import TrainerCallback

    class StopEngine(TrainerCallback):
        def on_train_end(self, args, state, control, **kwargs):
            stop_engine(llm)
            if folder:
                shutil.rmtree(folder, ignore_errors=True)

    return StopEngine()


def build_trainer(trainer_cls, constrained: dict[str, Any] | None, labels: Sequence[str], mask_forced: bool,
                  **kwargs: Any):
    """``trainer_cls(**kwargs)``, with vLLM rollouts set up when
    ``args.use_vllm`` (module doc), and the forced tokens of a constrained
    answer masked when ``mask_forced``. Returns the trainer and the live
    count of masked tokens (None when not masking)."""
    args, tokenizer, model = kwargs["args"], kwargs["processing_class"], kwargs["model"]
    if not args.use_vllm:
        trainer = trainer_cls(**kwargs)
    else:
        if constrained:
            skeleton = JSONSkeleton(tokenizer, labels, constrained["max_digits"])
            args.vllm_structured_outputs_regex = skeleton_regex(skeleton, tokenizer)
            # vLLM's log-probs are then the constrained ones, the loss's the
            # model's own (as under generate): their ratio is no sampling error
            args.vllm_importance_sampling_correction = False
        if args.vllm_max_model_length is None:  # else the model's context: a KV cache of 8k tokens a sequence
            prompts = kwargs["train_dataset"]["prompt"]
            longest = max(len(tokenizer(text=p)["input_ids"]) for p in prompts)
            args.vllm_max_model_length = longest + args.max_completion_length
        extra = rollout_llm_kwargs(model, args)
        with llm_defaults(extra):
            trainer = trainer_cls(**kwargs)
        if args.vllm_mode == "colocate":
            trainer.vllm_sync_stats = install_weight_sync(trainer, is_omni(model.config.model_type))
            trainer.add_callback(stop_at_train_end(trainer.vllm_generation.llm, extra.get("model")))
    if not (constrained and mask_forced):
        return trainer, None
    mask = mask_forced_vllm if args.use_vllm else mask_forced_tokens
    return trainer, mask(trainer, tokenizer, labels, constrained["max_digits"])


def forced_positions_text(tokenizer, skeleton: JSONSkeleton,
                          completion_ids: Sequence[Sequence[int]]) -> list[list[bool]]:
    """Per completion token: whether the skeleton left no choice for any of
    its characters (a forced literal's characters, ``}``, an end token after
    it). The character-level twin of
    :func:`~shala.model.constrained.forced_positions`: the same answer on
    the skeleton's own tokens, and right on any other spelling of them."""
    literals = skeleton_literals(skeleton, tokenizer)
    out = []
    for ids in completion_ids:
        piece, pos, in_literal, zero, off = 0, 0, False, False, False
        row = []
        for tok in ids:
            text = tokenizer.decode([tok], skip_special_tokens=True)
            forced = True
            for ch in text:
                if off or piece >= len(literals):
                    off = True
                    continue
                if not in_literal:
                    can_digit = pos < skeleton.max_digits and not zero
                    if ch in DIGITS and can_digit:
                        zero, pos, forced = zero or (pos == 0 and ch == "0"), pos + 1, False
                        continue
                    forced = forced and not can_digit  # the number ended: its own choice unless it had to
                    in_literal, pos = True, 0
                if ch != literals[piece][pos]:
                    off = True
                    continue
                pos += 1
                if pos == len(literals[piece]):
                    piece, pos, in_literal, zero = piece + 1, 0, False, False
            row.append(forced)
        out.append(row)
    return out


def mask_forced_vllm(trainer, tokenizer, labels: Sequence[str], max_digits: int = 3) -> dict[str, int]:
    """:func:`~shala.model.constrained.mask_forced_tokens` for vLLM's rollouts:
    forced tokens found on their text (:func:`forced_positions_text`)."""
    return mask_forced_tokens(trainer, tokenizer, labels, max_digits,
                              find_forced=functools.partial(forced_positions_text, tokenizer))
