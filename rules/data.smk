# Stage 1: raw files (download or mirror) -> canonical items, splits, stats.


rule fetch_data:
    output:
        f"{RES}/raw/{{dataset}}/MANIFEST.json",
    log:
        f"{RES}/logs/fetch_data/{{dataset}}.log",
    params:
        out=lambda w, output: os.path.dirname(output[0]),
        config=CONFIG_FILE,
        slice=config_slice("data_mirror", "datasets.{dataset}.mirror", "datasets.{dataset}.download"),
    resources:
        **cluster_resources("light"),
    conda:
        "../envs/light.yaml"
    shell:
        "shala fetch-data {wildcards.dataset} --out {params.out} --config {params.config} > {log} 2>&1"


rule prepare:
    input:
        raw_input,
    output:
        all_items=f"{RES}/data/{{dataset}}/items.jsonl",
        train=f"{RES}/data/{{dataset}}/train.jsonl",
        validation=f"{RES}/data/{{dataset}}/validation.jsonl",
        test=f"{RES}/data/{{dataset}}/test.jsonl",
        stats=f"{RES}/data/{{dataset}}/stats.json",
        record=f"{RES}/data/{{dataset}}/prepare.json",
    log:
        f"{RES}/logs/prepare/{{dataset}}.log",
    params:
        source=raw_dir,
        out=lambda w, output: os.path.dirname(output.stats),
        config=CONFIG_FILE,
        slice=config_slice(
            "split_seed", *(f"datasets.{{dataset}}.{k}" for k in ("adapter", "split", "options", "source"))
        ),
    resources:
        **cluster_resources("light"),
    conda:
        "../envs/light.yaml"
    shell:
        "shala prepare {wildcards.dataset} --source {params.source} --out {params.out}"
        " --config {params.config} > {log} 2>&1"
