# Stage 3: optional supervised warm-up, then GRPO per dataset x method x seed.


rule warmup_sft:
    input:
        train=f"{RES}/data/{{dataset}}/train.jsonl",
        model=base_model_input(),
    output:
        f"{RES}/models/{{dataset}}/{WARMUP}/seed{{seed}}/run.json",
    log:
        f"{RES}/logs/warmup_sft/{{dataset}}/seed{{seed}}.log",
    params:
        data=lambda w, input: os.path.dirname(input.train),
        out=lambda w, output: os.path.dirname(output[0]),
        model=lambda w, input: input.model[0] if input.model else base_model(),
        config=CONFIG_FILE,
        slice=config_slice(
            "model", "datasets.{dataset}.prompt", "training.warmup_sft", "training.freeze_unused_towers",
            "training.peft",
        ),
        launcher=launcher(),
        preflight=preflight(CONFIG_FILE),
    threads: job_threads()
    resources:
        **cluster_resources("train", gpus()),
    conda:
        "../envs/model.yaml"
    shell:
        # the model is a local folder (fetch_model / base_model made it): no hub access
        "export HF_HUB_OFFLINE=1\n"
        "({params.preflight} {params.launcher} sft --dataset {wildcards.dataset} --seed {wildcards.seed}"
        " --data {params.data} --model {params.model} --out {params.out}"
        " --threads {threads} --config {params.config}) > {log} 2>&1"


rule train:
    input:
        train=f"{RES}/data/{{dataset}}/train.jsonl",
        model=base_model_input(),
        warmup=warmup_input,
    output:
        f"{RES}/models/{{dataset}}/{{method}}/seed{{seed}}/run.json",
    log:
        f"{RES}/logs/train/{{dataset}}/{{method}}/seed{{seed}}.log",
    params:
        data=lambda w, input: os.path.dirname(input.train),
        out=lambda w, output: os.path.dirname(output[0]),
        model=lambda w, input: input.model[0] if input.model else base_model(),
        init=init_from_arg,
        config=CONFIG_FILE,
        slice=config_slice(
            "model", "datasets.{dataset}.prompt", "datasets.{dataset}.text_only", "training.grpo", "datasets.{dataset}.grpo",
            "training.warmup_sft",
            "methods.{method}", "training.freeze_unused_towers", "training.mask_forced_tokens", "training.peft",
        ),
        launcher=launcher(),
        preflight=preflight(CONFIG_FILE),
    threads: job_threads()
    resources:
        **cluster_resources("train", gpus()),
    conda:
        "../envs/model.yaml"
    shell:
        "export HF_HUB_OFFLINE=1\n"
        "({params.preflight} {params.launcher} train --dataset {wildcards.dataset} --method {wildcards.method}"
        " --seed {wildcards.seed} --data {params.data} --model {params.model} {params.init}"
        " --out {params.out} --threads {threads} --config {params.config}) > {log} 2>&1"
