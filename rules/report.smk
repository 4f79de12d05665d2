# Stage 6: tables and figures from the metrics alone (SPEC §7).


rule report:
    input:
        all_metrics,
    output:
        expand(
            f"{RES}/reports/{{name}}",
            name=[
                "table1.md", "table1.csv", "table1.tex", "metrics_long.csv",
                "significance.csv", "significance.md", "table2.csv", "table2.md", "table2.tex",
                "fig_ambiguity.png", "fig_ambiguity.pdf", "fig_per_class.png", "fig_per_class.pdf",
                "report.md",
            ],
        ),
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
