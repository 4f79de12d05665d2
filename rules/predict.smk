# Stage 4: greedy predictions of each model, and of the model-free references.


rule predict:
    input:
        data=f"{RES}/data/{{dataset}}/{{split}}.jsonl",
        model=predict_model_input,
    output:
        f"{RES}/predictions/{{dataset}}/{{method}}/seed{{seed}}/{{split}}.jsonl",
    log:
        f"{RES}/logs/predict/{{dataset}}/{{method}}/seed{{seed}}/{{split}}.log",
    wildcard_constraints:
        method=method_pattern(probe=False),
    params:
        data=lambda w, input: os.path.dirname(input.data),
        model=predict_model_ref,
        limit=limit_arg,
        config=CONFIG_FILE,
        slice=config_slice(
            "model.dtype", "model.component", "datasets.{dataset}.prompt", "datasets.{dataset}.text_only",
            "evaluation.max_new_tokens", "evaluation.limit",
        ),
        gpus=own_gpus(min(gpus(), 1)),
    threads: job_threads()
    resources:
        **cluster_resources("predict", min(gpus(), 1)),
    conda:
        "../envs/model.yaml"
    shell:
        # a GPU prediction runs on a device of its own (shala gpus), a CPU one as it is
        "HF_HUB_OFFLINE=1 {params.gpus}shala predict --dataset {wildcards.dataset} --data {params.data}"
        " --model {params.model} --split {wildcards.split} --out {output} {params.limit} --threads {threads}"
        " --config {params.config} > {log} 2>&1"


# The capacity probe (methods with trainer: probe): the frozen base model's
# hidden states of the same prompt, read out by a soft-label linear model fitted
# on train (shala.evaluation.probe). One seed: it is deterministic.
rule probe:
    input:
        data=f"{RES}/data/{{dataset}}/{{split}}.jsonl",
        train=f"{RES}/data/{{dataset}}/train.jsonl",
        model=base_model_input(),
    output:
        f"{RES}/predictions/{{dataset}}/{{method}}/seed{{seed}}/{{split}}.jsonl",
    log:
        f"{RES}/logs/probe/{{dataset}}/{{method}}/seed{{seed}}/{{split}}.log",
    wildcard_constraints:
        method=method_pattern(probe=True),
    params:
        data=lambda w, input: os.path.dirname(input.data),
        model=lambda w: base_model(),
        limit=limit_arg,
        config=CONFIG_FILE,
        slice=config_slice(
            "model.dtype", "model.component", "datasets.{dataset}.prompt", "datasets.{dataset}.text_only",
            "evaluation.limit", "evaluation.probe", "evaluation.batch_size",
        ),
        gpus=own_gpus(min(gpus(), 1)),
    threads: job_threads()
    resources:
        **cluster_resources("predict", min(gpus(), 1)),
    conda:
        "../envs/model.yaml"
    shell:
        "HF_HUB_OFFLINE=1 {params.gpus}shala probe --dataset {wildcards.dataset} --data {params.data}"
        " --model {params.model} --split {wildcards.split} --out {output} --seed {wildcards.seed} {params.limit}"
        " --threads {threads} --config {params.config} > {log} 2>&1"


rule reference_predictor:
    input:
        data=f"{RES}/data/{{dataset}}/{{split}}.jsonl",
        train=f"{RES}/data/{{dataset}}/train.jsonl",
        raw=raw_input,
    output:
        f"{RES}/predictions/{{dataset}}/ref_{{predictor}}/seed{{seed}}/{{split}}.jsonl",
    log:
        f"{RES}/logs/reference/{{dataset}}/{{predictor}}/seed{{seed}}/{{split}}.log",
    params:
        data=lambda w, input: os.path.dirname(input.data),
        source=raw_dir,
        limit=limit_arg,
    resources:
        **cluster_resources("light"),
    conda:
        "../envs/light.yaml"
    shell:
        "shala reference {wildcards.predictor} --data {params.data} --split {wildcards.split}"
        " --out {output} --source {params.source} {params.limit} > {log} 2>&1"
