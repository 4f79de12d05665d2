# Stage 5: metrics of every predictions file (docs/design.md §6).


rule evaluate:
    input:
        path("predictions", results=RES),
    output:
        metrics=path("metrics", results=RES),
        per_item=path("per_item", results=RES),
    log:
        f"{RES}/logs/evaluate/{{dataset}}/{{run}}/seed{{seed}}/{{split}}.log",
    params:
        policy=config["evaluation"]["on_parse_failure"],
    resources:
        **job_resources("light"),
    conda:
        "../envs/light.yaml"
    shell:
        "shala evaluate --predictions {input} --out {output.metrics} --items-out {output.per_item}"
        " --on-parse-failure {params.policy} > {log} 2>&1"
