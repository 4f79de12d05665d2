# Stage 4: greedy predictions of each model, and of the model-free references.


rule predict:
    input:
        data=path("split", results=RES),
        model=predict_model_input,
    output:
        path("predictions", results=RES, run="{method}"),
    log:
        f"{RES}/logs/predict/{{dataset}}/{{method}}/seed{{seed}}/{{split}}.log",
    wildcard_constraints:
        method=method_pattern(probe=False),
    params:
        data=lambda w, input: os.path.dirname(input.data),
        model=predict_model_ref,
        limit=limit_arg,
        slice=step_slice("predict"),
        gpus=on_own_gpus(min(gpus(), 1)),
    threads: job_threads()
    resources:
        **job_resources("predict", min(gpus(), 1)),
    conda:
        "../envs/model.yaml"
    shell:
        # a GPU prediction runs on a device of its own (shala gpus), a CPU one as it is
        "HF_HUB_OFFLINE=1 {params.gpus}shala predict --dataset {wildcards.dataset} --data {params.data}"
        " --model {params.model} --split {wildcards.split} --out {output} {params.limit} --threads {threads}"
        " --slice {params.slice:q} > {log} 2>&1"


# The capacity probe (methods with trainer: probe): the frozen base model's
# hidden states of the same prompt, read out by a soft-label linear model fitted
# on train (shala.evaluation.probe). One seed: it is deterministic.
rule probe:
    input:
        data=path("split", results=RES),
        train=path("split", results=RES, split="train"),
        model=base_model_input(),
    output:
        path("predictions", results=RES, run="{method}"),
    log:
        f"{RES}/logs/probe/{{dataset}}/{{method}}/seed{{seed}}/{{split}}.log",
    wildcard_constraints:
        method=method_pattern(probe=True),
    params:
        data=lambda w, input: os.path.dirname(input.data),
        model=lambda w: base_model(),
        limit=limit_arg,
        slice=step_slice("probe"),
        gpus=on_own_gpus(min(gpus(), 1)),
    threads: job_threads()
    resources:
        **job_resources("predict", min(gpus(), 1)),
    conda:
        "../envs/model.yaml"
    shell:
        "HF_HUB_OFFLINE=1 {params.gpus}shala probe --dataset {wildcards.dataset} --data {params.data}"
        " --model {params.model} --split {wildcards.split} --out {output} --seed {wildcards.seed} {params.limit}"
        " --threads {threads} --slice {params.slice:q} > {log} 2>&1"


rule reference_predictor:
    input:
        data=path("split", results=RES),
        train=path("split", results=RES, split="train"),
        raw=raw_input,
    output:
        path("predictions", results=RES, run="ref_{predictor}"),
    log:
        f"{RES}/logs/reference/{{dataset}}/{{predictor}}/seed{{seed}}/{{split}}.log",
    params:
        data=lambda w, input: os.path.dirname(input.data),
        source=raw_dir,
        limit=limit_arg,
    resources:
        **job_resources("light"),
    conda:
        "../envs/light.yaml"
    shell:
        "shala reference {wildcards.predictor} --data {params.data} --split {wildcards.split}"
        " --out {output} --source {params.source} {params.limit} > {log} 2>&1"
