# Stage 6: tables, paired tests, claims and figures from the metrics and the
# training logs alone (SPEC §7). The report reads exactly the files listed here.


rule report:
    input:
        metrics=report_metrics(),
        per_item=report_items(),
        runs=report_runs(),
    output:
        expand(f"{RES}/reports/{{name}}", name=REPORT_OUTPUTS),
    log:
        f"{RES}/logs/report.log",
    params:
        out=lambda w, output: os.path.dirname(output[0]),
        split=REPORT_SPLIT,
        config=report_config_file(),
    resources:
        **cluster_resources("light"),
    conda:
        "../envs/light.yaml"
    shell:
        "shala report --metrics {input.metrics} --runs {input.runs} --split {params.split}"
        " --out {params.out} --config {params.config} > {log} 2>&1"
