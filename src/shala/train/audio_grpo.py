"""GRPO with speech: TRL's ``GRPOTrainer`` with each prompt's audio fed to a
Qwen2.5-Omni thinker, in generation and in every log-prob forward.

Why a subclass: TRL 1.16 takes multimodal inputs only from image parts of
conversational prompts. Our prompts are strings (template applied, response
prefix written, :mod:`shala.prompts`), each with one ``<|AUDIO|>``
placeholder; the dataset's ``audio`` column names the file. Without this
class the model would see the placeholder token and no audio.

Where the audio goes in (TRL's own code paths, hooked at three points):

- ``_generate_and_score_completions``: keeps the batch's ``audio`` paths
  (rows in prompt order, each prompt repeated ``num_generations`` times) and
  adds ``input_features`` / ``feature_attention_mask`` to the batch it
  returns, one row per completion, so TRL's shuffle and split into
  micro-batches keep them aligned with the completions;
- ``_tokenize_prompts``: computes the features (:class:`shala.model.audio.AudioFeatures`),
  expands each placeholder to the audio tower's output length and hands
  the features to ``model.generate`` (TRL passes tensor "multimodal fields"
  through to it);
- ``_get_per_token_logps_and_entropies``: while features are current (set
  during generation for the old/reference log-probs, and in
  ``_compute_loss`` for the policy log-probs) the forward gets the rows of
  the features that belong to its chunk.
"""

from __future__ import annotations

from typing import Any

import torch
from trl import GRPOTrainer

from ..errors import ConfigError
from ..model.audio import AudioFeatures
from ..model.engines import AUDIO_VLLM

AUDIO_KEYS = ("input_features", "feature_attention_mask")
AUDIO_COLUMN = "audio"


class AudioGRPOTrainer(GRPOTrainer):
    """``GRPOTrainer`` whose string prompts carry one audio clip each
    (column ``audio``); ``audio`` computes the features and the expansion."""

    def __init__(self, *args, audio: AudioFeatures, **kwargs):
        grpo_args = kwargs.get("args", args[2] if len(args) > 2 else None)
        if getattr(grpo_args, "use_vllm", False):  # before TRL starts the engine
            raise ConfigError(f"training.grpo.use_vllm: true {AUDIO_VLLM}")
        super().__init__(*args, **kwargs)
        if self.use_vllm or self.use_transformers_continuous_batching or self.tools:
            raise ValueError("AudioGRPOTrainer feeds audio to transformers' generate only "
                             "(no vLLM, continuous batching or tools)")
        self.audio = audio
        self._batch_audio: list[str] | None = None  # paths of the batch being generated
        self._audio_inputs: dict[str, torch.Tensor] | None = None  # features of the current forward
        self.audio_forwards = 0  # log-prob forwards that carried audio (tests, sanity checks)

    def _set_signature_columns_if_needed(self):
        super()._set_signature_columns_if_needed()
        if AUDIO_COLUMN not in self._signature_columns:
            self._signature_columns = [*self._signature_columns, AUDIO_COLUMN]

    def _generate_and_score_completions(self, inputs: list[dict[str, Any]]) -> dict[str, Any]:
        missing = [i for i, x in enumerate(inputs) if not x.get(AUDIO_COLUMN)]
        if missing:
            raise ValueError(f"AudioGRPOTrainer: {len(missing)} rows of the batch have no '{AUDIO_COLUMN}' path")
        self._batch_audio = [str(x[AUDIO_COLUMN]) for x in inputs]
        try:
            output = super()._generate_and_score_completions(inputs)
            if self._audio_inputs is None:
                raise RuntimeError("AudioGRPOTrainer: generation ran without computing the audio features")
            output.update(self._audio_inputs)
            return output
        finally:
            self._batch_audio = None
            self._audio_inputs = None

    def _tokenize_prompts(self, prompts: list):
        if self._batch_audio is None or len(self._batch_audio) != len(prompts):
            raise RuntimeError("AudioGRPOTrainer: prompts and audio paths are out of step")
        prompt_ids, images, fields = super()._tokenize_prompts(prompts)
        prompt_ids, features = self.audio.prepare(prompt_ids, self._batch_audio)
        device = self.accelerator.device
        self._audio_inputs = {k: features[k].to(device) for k in AUDIO_KEYS}
        return prompt_ids, images, {**fields, **self._audio_inputs}

    def _compute_loss(self, model, inputs):
        self._audio_inputs = {k: inputs[k] for k in AUDIO_KEYS}
        try:
            return super()._compute_loss(model, inputs)
        finally:
            self._audio_inputs = None

    def _get_per_token_logps_and_entropies(self, model, input_ids, attention_mask, logits_to_keep,
                                           batch_size=None, compute_entropy=False, compute_aux_loss=False,
                                           **vision):
        """TRL's chunked scoring of the completion tokens, with each chunk's
        audio rows (the image arguments must be empty: one modality here)."""
        audio = self._audio_inputs
        if audio is None:
            return super()._get_per_token_logps_and_entropies(
                model, input_ids, attention_mask, logits_to_keep, batch_size=batch_size,
                compute_entropy=compute_entropy, compute_aux_loss=compute_aux_loss, **vision)
        given = sorted(k for k, v in vision.items() if v is not None)
        if given:
            raise ValueError(f"AudioGRPOTrainer: audio prompts cannot also carry {given}")
        if audio["input_features"].shape[0] != input_ids.shape[0]:
            raise RuntimeError(f"AudioGRPOTrainer: {audio['input_features'].shape[0]} audio rows for "
                               f"{input_ids.shape[0]} sequences")
        batch_size = batch_size or input_ids.size(0)
        logps, entropies, aux = [], [], []
        for start in range(0, input_ids.size(0), batch_size):
            end = min(start + batch_size, input_ids.size(0))
            ids, mask = input_ids[start:end], attention_mask[start:end]
            model_inputs = {"input_ids": ids, "attention_mask": mask,
                            **{k: audio[k][start:end] for k in AUDIO_KEYS}}
            if compute_aux_loss:
                model_inputs["output_router_logits"] = True
            labels = ids.masked_fill(mask == 0, -100)  # only the completion tokens are scored
            labels[:, :-logits_to_keep] = -100
            with self.accelerator.autocast():
                out = model(**model_inputs, labels=labels, fused_lm_head=True)
            self.audio_forwards += 1
            logps.append(out.log_probs[:, -logits_to_keep:])
            if compute_entropy:
                entropies.append(out.entropy[:, -logits_to_keep:])
            if compute_aux_loss:
                aux.append(out.aux_loss)
        return (torch.cat(logps, dim=0), torch.cat(entropies, dim=0) if compute_entropy else None,
                torch.stack(aux).mean() if compute_aux_loss else None)
