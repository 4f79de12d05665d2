"""``report.md``: one page with every table, the paired tests, the claims and
the figures, each section once."""

from __future__ import annotations

import json

from .figures import FIGURES
from .tables import DASH, N_BOOT

LEARNING_HEAD = (
    "Read this before the tables. Per trained run and seed: the completions' token entropy on the first "
    "step and over the last quarter of the steps, the fraction of groups whose rollouts all got the same "
    "reward over the last quarter (their advantage, hence their gradient, is 0), and the steps whose "
    "gradient norm was 0; then JSD, pred_spread and the paired per-item JSD difference against the label "
    "prior (ref_prior) and mls, with its 95% bootstrap interval. A run reads the items on a seed when "
    "pred_spread ≥ 0.05 and it beats ref_prior (interval below 0). On the known-answer control (the items "
    "state their distribution) a method that does not read the items has not learned; on real data a "
    "run that does not beat the prior has learned nothing from the items. The lines under the table name the "
    "seeds that answered exactly uniformly (1/C for every class of every item).\n\n")


def table1_head(split: str) -> str:
    return (f"Table 1 ({split} split): mean over seeds (± std when more than one), relative change against zs "
            f"in parentheses (\"jsd vs zs\": the change in JSD, {DASH} without a zs run), best model run per "
            "dataset in bold (never a reference predictor, never a row flagged ‡, § or †, never a value worse "
            "than ref_prior's in its metric, and in JSD, BC, KL and TVD never a row flagged ¶: a dataset where "
            "a model-free predictor beats every model has no bold); ref_* rows are model-free reference "
            "predictors; `dataset/subset` rows are the subsets. JSD is the Jensen–Shannon distance, base 2; "
            f"its 95% CI is a percentile bootstrap over items ({N_BOOT:,} resamples) of per-item JSD averaged "
            f"over seeds ({DASH} without per-item scores). "
            "pred_spread: mean JSD between each item's prediction and the run's mean prediction (0: the same "
            "answer for every item).\n\n")


def notes_md(notes: list[str]) -> str:
    return "".join(f"- {n}\n" for n in notes)


def page(*, split: str, n_files: int, n_datasets: int, n_runs: int, n_run_records: int, summary: str,
         table1_md: str, table1_notes: list[str], table2_md: str, paired_md: str, claims_md: str,
         notes: list[str], setup: str = "", learning_md: str = "", training_caption: str = "") -> str:
    parts = [f"# Results report ({split} split)\n",
             f"{n_files} metrics files, {n_datasets} dataset(s), {n_runs} run(s), {n_run_records} training "
             "run record(s). Tables as CSV/Markdown/LaTeX and figures as PNG/PDF lie next to this page.\n",
             "Verdicts on the paper's claims (details below):\n", summary,
             "## Setup\n", setup or "No training run records were given.\n",
             "## Did training learn?\n", LEARNING_HEAD + (learning_md or "No trained run.\n"),
             "## Table 1: datasets × methods\n", table1_head(split) + table1_md]
    if table1_notes:
        parts.append(notes_md(table1_notes))
    parts += ["## Table 2: published numbers\n", table2_md,
              "## Paired tests\n", paired_md,
              "## The paper's claims\n", claims_md,
              "## Figures\n"]
    for stem in FIGURES:  # a figure without a caption of its own gets the training caption
        alt, caption = FIGURES.meta(stem)["alt"], FIGURES.meta(stem)["caption"]
        parts += [(caption or training_caption) + "\n", f"![{alt}]({stem}.png)\n", f"([PDF]({stem}.pdf))\n"]
    if notes:
        parts += ["## Notes\n", notes_md(notes)]
    return "\n".join(parts)


# What the run records say of each training run, for the Setup section.
SETUP_FIELDS = (("learning_rate", "lr"), ("max_steps", "steps"), ("num_generations", "rollouts"),
                ("per_device_train_batch_size", "completions/step/device"), ("temperature", "temperature"),
                ("max_completion_length", "max completion"), ("scale_rewards", "scale_rewards"),
                ("loss_type", "loss"))
# How the paper's task texts (Appendix D.3) begin, per dataset of the paper;
# a dataset not here (the control, a user's own) has no paper prompt.
PAPER_TASK_STARTS = {"chaosnli": "Given a premise and a hypothesis, predict the probability",
                     "goemotions": "Assign a calibrated probability distribution over the following emotion",
                     "msp_podcast": "Predict the probability of the emotion in the target utterance"}


def prompt_kind(dataset: str, task: str) -> str:
    """Whether a run's prompt is the paper's: the Setup section must not call
    a compact or a non-paper dataset's prompt the paper's."""
    start = PAPER_TASK_STARTS.get(dataset)
    if start is None:
        return "this dataset's own prompt (the paper has none for it)"
    if " ".join(task.split()).startswith(start):
        return "the paper's prompt (Appendix D.3)"
    return "a compact prompt, not the paper's (Appendix D.3; config.yaml has the paper's)"


def fit_cell(record: dict) -> str:
    """The memory fallback a run applied (run.json key ``fit``, written by
    shala.launch.fit.fit_to_hardware): a run on smaller GPUs than the paper's may
    have traded speed for memory, and its Setup row says so."""
    if "fit" not in record:
        return DASH
    fit = record["fit"]
    if fit is None:
        return "not checked (CPU)"
    if not isinstance(fit, dict):
        return str(fit)
    if not fit.get("checked", True):
        return f"not checked ({fit.get('reason') or fit.get('mode')})"
    est, mem, n = fit.get("estimate_gib"), fit.get("gpu_mem_gib"), fit.get("gpus")
    where = (f" ({est:.1f} of {mem:.1f} GiB x {n})" if isinstance(est, (int, float))
             and isinstance(mem, (int, float)) else "")
    return (f"{fit['fallback']}{where}" if fit.get("fallback") else f"none needed{where}")


def lora_departures(run_records: list) -> list[str]:
    """One line per LoRA setting the runs used (run.json key ``peft``,
    training.peft): a departure from the paper's full fine-tune."""
    by_setting: dict[tuple, list[str]] = {}
    for r in run_records:
        peft = r.data.get("peft")
        if isinstance(peft, dict):
            trainer_cfg = r.data.get("grpo_config") or r.data.get("sft_config") or {}
            lr = (trainer_cfg.get("full") or {}).get("learning_rate")
            key = (peft.get("r"), peft.get("lora_alpha"), str(peft.get("target_modules")), lr)
            by_setting.setdefault(key, []).append(f"{r.dataset}/{r.method}/seed {r.seed}")
    return [f"Departure from the paper: LoRA (r={r}, alpha={alpha}, {targets}"
            + (f", learning rate {lr:g}" if isinstance(lr, (int, float)) else "")
            + f") instead of the paper's full fine-tune (training.peft): {', '.join(runs)}.\n"
            for (r, alpha, targets, lr), runs in by_setting.items()]


def setup_md(run_records: list) -> str:
    """The training setup as the run records state it: model, prompt,
    response prefix and decoding aids, GRPO/SFT settings and the memory
    fallback (GPU fit) per run. A reader
    needs this before any number: a demo run is not the paper's setup."""
    if not run_records:
        return "No training run records were given.\n"
    lines = ["| dataset | method | seed | kind | model | " + " | ".join(h for _, h in SETUP_FIELDS)
             + " | response prefix | constrained | s/step | GPU fit |",
             "|" + "---|" * (len(SETUP_FIELDS) + 9)]
    prompts = {}
    for r in run_records:
        d = r.data
        cfg = (d.get("grpo_config") or d.get("sft_config") or {}).get("full") or {}
        vals = [str(cfg.get(k, DASH)) for k, _ in SETUP_FIELDS]
        prefix = ", ".join(f"`{p}`" for p in d.get("response_prefix") or []) or "none"
        spp = (d.get("timing") or {}).get("seconds_per_step")
        lines.append(f"| {r.dataset} | {r.method} | {r.seed} | {d.get('kind', DASH)} | "
                     f"{d.get('init_from') or d.get('model_ref', DASH)} | " + " | ".join(vals)
                     + f" | {prefix} | {'yes' if d.get('constrained') else 'no'} | "
                     + (f"{spp:.1f}" if isinstance(spp, (int, float)) else DASH) + f" | {fit_cell(d)} |")
        if isinstance(d.get("prompt"), dict):
            prompts.setdefault(r.dataset, d["prompt"])
    out = ["Training runs as their run records state them (`run.json` beside each model):\n",
           "\n".join(lines) + "\n"]
    out.extend(lora_departures(run_records))
    for ds, p in prompts.items():
        task = str(p.get("task") or "")
        kind = prompt_kind(ds, task)
        body = "\n".join(f"    {k}: {json.dumps(v) if isinstance(v, str) and chr(10) in v else v}"
                         for k, v in p.items() if v not in (None, "", {}))
        out.append(f"Prompt of {ds}: {kind}, the same at training and evaluation:\n\n{body}\n")
    return "\n".join(out)
