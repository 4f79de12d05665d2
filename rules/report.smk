# Stage 6: tables and figures from the metrics alone (SPEC §7).


rule report:
    input:
        all_metrics,
    output:
        f"{RES}/reports/table1.md",
        f"{RES}/reports/table1.csv",
        f"{RES}/reports/table1.tex",
    log:
        f"{RES}/logs/report.log",
    params:
        metrics=f"{RES}/metrics",
        out=lambda w, output: os.path.dirname(output[0]),
        config=CONFIG_FILE,
    conda:
        "../envs/shala.yaml"
    shell:
        "shala report --metrics {params.metrics} --out {params.out}"
        " --config {params.config} > {log} 2>&1"
