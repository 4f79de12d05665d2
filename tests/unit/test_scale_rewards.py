"""docs/design.md §5 note: under TRL's group normalisation the ambiguity factor H~(p)
cancels; under batch (or no) scaling it survives as a per-item weight.

The rewards here are FIXED (hand-written completions scored by the real
reward functions), so the comparison is exact arithmetic, not sampling.
``compute_advantages`` replicates TRL 1.16's inlined formula; the last tests
check it against the real ``GRPOTrainer``.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from shala.data.items import normalised_entropy
from shala.train.rewards import REWARDS


# The advantage formula of TRL 1.16, replicated here to test what group and
# batch scaling do to the SHALA weight (a test-only helper).
def compute_advantages(rewards, num_generations: int, scale_rewards: str):
    """GRPO advantages exactly as TRL 1.16 computes them for one reward function.

    Replicates ``GRPOTrainer._generate_and_score_completions``
    (trl/trainer/grpo_trainer.py, 1.16.0, lines 2762-2810, branch
    ``multi_objective_aggregation="sum_then_normalize"``), which inlines it:

        mean_g = nanmean(r.view(-1, G), dim=1).repeat_interleave(G)
        std    = nanstd(r.view(-1, G), dim=1).repeat_interleave(G)   # "group"/"none"
               | nanstd(r).expand_as(r)                              # "batch"
        adv    = r - mean_g
        adv    = adv / (std + 1e-4)          unless scale_rewards == "none"
        adv    = nan_to_num(adv, nan=0.0)

    ``nanstd`` (trl/trainer/utils.py:1021) is the Bessel-corrected
    (unbiased) std. Note the batch variant still centres on the *group*
    mean, and only the divisor changes. A zero-spread group (std 0) gets
    advantage exactly 0 (numerator 0, divisor 1e-4), so it contributes no
    policy gradient. Because of the 1e-4, group scaling cancels a
    per-group factor h only approximately: adv(h·r) / adv(r) =
    (std+1e-4)/(std+1e-4/h), i.e. a relative error below 1e-4·(1/h − 1)/std.
    """
    import torch
    from trl.trainer.utils import nanstd

    r = torch.as_tensor(rewards, dtype=torch.float32).flatten()
    g = int(num_generations)
    mean_g = torch.nanmean(r.view(-1, g), dim=1).repeat_interleave(g, dim=0)
    if scale_rewards in ("group", "none"):
        std = (nanstd(r.view(-1, g), dim=1).repeat_interleave(g, dim=0) if g > 1
               else torch.zeros_like(r))
    elif scale_rewards == "batch":
        std = nanstd(r).expand_as(r) if r.numel() > 1 else torch.zeros_like(r)
    else:
        raise ValueError(f"scale_rewards must be 'group', 'batch' or 'none', not {scale_rewards!r}")
    adv = r - mean_g
    if scale_rewards != "none":
        adv = adv / (std + 1e-4)
    return torch.nan_to_num(adv, nan=0.0)


LABELS = ["entailment", "neutral", "contradiction"]
G = 4
# Three items (ambiguity 0.52 .. 1.0), G fixed completions each, all parseable
# and all different, so every group has a clear spread.
DISTS = [[0.8, 0.15, 0.05], [0.5, 0.3, 0.2], [0.34, 0.33, 0.33]]
PREDS = [[0.7, 0.2, 0.1], [0.2, 0.5, 0.3], [1.0, 0.0, 0.0], [0.4, 0.3, 0.3]]


def _columns(dists):
    rows = [d for d in dists for _ in range(G)]
    return {"labels": [LABELS] * len(rows), "dist": rows,
            "entropy_norm": [normalised_entropy(d) for d in rows]}


def _completions(n_items):
    return [json.dumps(dict(zip(LABELS, p))) for _ in range(n_items) for p in PREDS]


def _rewards(name, dists, completions=None):
    cols = _columns(dists)
    comps = completions if completions is not None else _completions(len(dists))
    return np.array(REWARDS[name](prompts=None, completions=comps, **cols))


def test_shala_is_ambiguity_times_no_ambi():
    h = np.array(_columns(DISTS)["entropy_norm"])
    np.testing.assert_allclose(_rewards("shala", DISTS), h * _rewards("shala_no_ambi", DISTS), rtol=1e-12)
    assert h.min() > 0.5  # all items ambiguous enough for the tolerance below


def test_group_scaling_cancels_ambiguity():
    """Identical advantages under "group", up to TRL's +1e-4 in the divisor:
    adv(h·r)/adv(r) = (std+1e-4)/(std+1e-4/h), here > 0.999."""
    a_shala = compute_advantages(_rewards("shala", DISTS), G, "group")
    a_plain = compute_advantages(_rewards("shala_no_ambi", DISTS), G, "group")
    torch.testing.assert_close(a_shala, a_plain, rtol=1e-3, atol=1e-4)
    assert torch.equal(a_shala.sign(), a_plain.sign())


@pytest.mark.parametrize("scale", ["batch", "none"])
def test_batch_and_none_scaling_keep_ambiguity(scale):
    a_shala = compute_advantages(_rewards("shala", DISTS), G, scale)
    a_plain = compute_advantages(_rewards("shala_no_ambi", DISTS), G, scale)
    assert (a_shala - a_plain).abs().max().item() > 0.05
    # Per group, the shala advantages are the plain ones times H~(p) (none),
    # times H~(p) and a common batch factor (batch).
    h = torch.tensor(_columns(DISTS)["entropy_norm"], dtype=torch.float32)
    ratio = (a_shala / (h * a_plain)).view(-1, G)
    torch.testing.assert_close(ratio, torch.full_like(ratio, ratio[0, 0].item()), rtol=1e-4, atol=1e-5)


def test_unanimous_item_is_the_group_exception():
    """An item with H~(p) = 0 gives shala rewards all 0 (zero spread,
    advantage 0) while shala_no_ambi still ranks its rollouts: the only
    way H~ acts under group scaling."""
    dists = [[1.0, 0.0, 0.0], [0.5, 0.3, 0.2]]
    a_shala = compute_advantages(_rewards("shala", dists), G, "group")
    a_plain = compute_advantages(_rewards("shala_no_ambi", dists), G, "group")
    assert torch.equal(a_shala[:G], torch.zeros(G))
    assert a_plain[:G].abs().max().item() > 0.5
    torch.testing.assert_close(a_shala[G:], a_plain[G:], rtol=1e-3, atol=1e-4)


def test_zero_std_group_gets_zero_advantage_not_nan():
    """TRL divides by std + 1e-4, so an all-equal group (e.g. all parse
    failures, reward 0) has advantage exactly 0 under every scaling."""
    rewards = torch.tensor([0.0] * G + [0.1, 0.2, 0.3, 0.4])
    for scale in ("group", "batch", "none"):
        adv = compute_advantages(rewards, G, scale)
        assert torch.isfinite(adv).all()
        assert torch.equal(adv[:G], torch.zeros(G))


def test_formula_by_hand():
    r = torch.tensor([1.0, 0.0, 0.5, 0.5])
    std = torch.tensor([1.0, 0.0, 0.5, 0.5]).std()  # Bessel-corrected, as TRL's nanstd
    torch.testing.assert_close(compute_advantages(r, 4, "group"), (r - 0.5) / (std + 1e-4))
    torch.testing.assert_close(compute_advantages(r, 4, "none"), r - 0.5)
    r2 = torch.tensor([1.0, 0.0, 0.2, 0.4])
    expected = torch.cat([r2[:2] - 0.5, r2[2:] - 0.3]) / (r2.std() + 1e-4)
    torch.testing.assert_close(compute_advantages(r2, 2, "batch"), expected)


def test_trl_defaults_are_what_we_document():
    """Canary: the defaults docs/design.md §5 makes us override explicitly."""
    from trl import GRPOConfig

    f = GRPOConfig.__dataclass_fields__
    assert f["scale_rewards"].default == "group"
    assert f["loss_type"].default == "dapo"
    assert f["num_generations"].default == 8
    assert f["max_completion_length"].default == 512
    assert f["beta"].default == 0.0


# ------------------------------------------- against the real GRPOTrainer

def _length_reward(prompts=None, completions=(), **_):
    """Deterministic in the completion, with spread across rollouts."""
    return [float(len(c) % 7) / 7.0 for c in completions]


_length_reward.__name__ = "length"


@pytest.mark.parametrize("scale", ["group", "batch"])
def test_compute_advantages_matches_grpo_trainer(tiny_model_dir, tmp_path, scale):
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    torch.set_num_threads(1)
    args = GRPOConfig(output_dir=str(tmp_path), max_steps=1, per_device_train_batch_size=4,
                      gradient_accumulation_steps=2, num_generations=G, max_completion_length=12,
                      temperature=1.2, beta=0.0, scale_rewards=scale, loss_type="grpo",
                      learning_rate=1e-6, bf16=False, report_to="none", save_strategy="no",
                      activation_checkpointing=False, logging_steps=1, seed=0)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, use_safetensors=True)
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    ds = Dataset.from_list([{"prompt": f"Premise {i}: a man. Hypothesis:"} for i in range(4)])
    trainer = GRPOTrainer(model=model, reward_funcs=[_length_reward], args=args, train_dataset=ds,
                          processing_class=tok)
    trainer.train()
    rewards = torch.tensor(list(trainer._logs["rewards"]["length"]))
    logged = torch.tensor(list(trainer._logs["advantages"]))
    assert rewards.numel() == logged.numel() == 8
    assert rewards.std() > 0  # a meaningful comparison
    torch.testing.assert_close(compute_advantages(rewards, G, scale), logged, rtol=1e-5, atol=1e-6)
