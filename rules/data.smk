# Stage 1: raw files (download or mirror) -> canonical items, splits, stats.


rule fetch_data:
    output:
        path("raw", results=RES),
    log:
        f"{RES}/logs/fetch_data/{{dataset}}.log",
    params:
        out=lambda w, output: os.path.dirname(output[0]),
        slice=step_slice("fetch-data"),
    resources:
        **job_resources("light"),
    conda:
        "../envs/light.yaml"
    shell:
        "shala fetch-data {wildcards.dataset} --out {params.out} --slice {params.slice:q} > {log} 2>&1"


rule prepare:
    input:
        raw_input,
    output:
        all_items=path("items", results=RES),
        **{split: path("split", results=RES, split=split) for split in ("train", "validation", "test")},
        stats=path("stats", results=RES),
        record=path("prepared", results=RES),
    log:
        f"{RES}/logs/prepare/{{dataset}}.log",
    params:
        source=raw_dir,
        out=lambda w, output: os.path.dirname(output.stats),
        slice=step_slice("prepare"),
    resources:
        **job_resources("light"),
    conda:
        "../envs/light.yaml"
    shell:
        "shala prepare {wildcards.dataset} --source {params.source} --out {params.out}"
        " --slice {params.slice:q} > {log} 2>&1"
