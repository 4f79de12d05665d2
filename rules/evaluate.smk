# Stage 5: metrics of every predictions file (docs/design.md §6).


rule evaluate:
    input:
        f"{RES}/predictions/{{dataset}}/{{run}}/seed{{seed}}/{{split}}.jsonl",
    output:
        metrics=f"{RES}/metrics/{{dataset}}/{{run}}/seed{{seed}}/{{split}}.json",
        per_item=f"{RES}/metrics/{{dataset}}/{{run}}/seed{{seed}}/{{split}}.items.csv",
    log:
        f"{RES}/logs/evaluate/{{dataset}}/{{run}}/seed{{seed}}/{{split}}.log",
    params:
        policy=config["evaluation"]["on_parse_failure"],
    resources:
        **cluster_resources("light"),
    conda:
        "../envs/light.yaml"
    shell:
        "shala evaluate --predictions {input} --out {output.metrics} --items-out {output.per_item}"
        " --on-parse-failure {params.policy} > {log} 2>&1"
