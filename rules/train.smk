# Stage 3: optional supervised warm-up, then GRPO per dataset x method x seed.


rule warmup_sft:
    input:
        train=path("split", results=RES, split="train"),
        model=base_model_input(),
    output:
        path("warmup", results=RES),
    log:
        f"{RES}/logs/warmup_sft/{{dataset}}/seed{{seed}}.log",
    params:
        data=lambda w, input: os.path.dirname(input.train),
        out=lambda w, output: os.path.dirname(output[0]),
        model=lambda w, input: input.model[0] if input.model else base_model(),
        slice=step_slice("sft"),
        launcher=launcher(),
        preflight=preflight(method=WARMUP),
    threads: job_threads()
    resources:
        **job_resources("train", gpus()),
    conda:
        "../envs/model.yaml"
    shell:
        # the model is a local folder (fetch_model / base_model made it): no hub access
        "export HF_HUB_OFFLINE=1\n"
        "({params.preflight} {params.launcher} sft --dataset {wildcards.dataset} --seed {wildcards.seed}"
        " --data {params.data} --model {params.model} --out {params.out}"
        " --threads {threads} --slice {params.slice:q}) > {log} 2>&1"


rule train:
    input:
        train=path("split", results=RES, split="train"),
        model=base_model_input(),
        warmup=warmup_input,
    output:
        path("run", results=RES),
    log:
        f"{RES}/logs/train/{{dataset}}/{{method}}/seed{{seed}}.log",
    params:
        data=lambda w, input: os.path.dirname(input.train),
        out=lambda w, output: os.path.dirname(output[0]),
        model=lambda w, input: input.model[0] if input.model else base_model(),
        init=init_from_arg,
        slice=step_slice("train"),
        launcher=launcher(),
        preflight=preflight(),
    threads: job_threads()
    resources:
        **job_resources("train", gpus()),
    conda:
        "../envs/model.yaml"
    shell:
        "export HF_HUB_OFFLINE=1\n"
        "({params.preflight} {params.launcher} train --dataset {wildcards.dataset} --method {wildcards.method}"
        " --seed {wildcards.seed} --data {params.data} --model {params.model} {params.init}"
        " --out {params.out} --threads {threads} --slice {params.slice:q}) > {log} 2>&1"
