# Stage 6: tables, paired tests, claims and figures from the metrics and the
# training logs alone (docs/design.md §7). The report reads exactly the files listed here.
#
# Every output is also flagged for Snakemake's own HTML report, one
# self-contained page after a run:
#
#   snakemake --report results/demo/report.html --profile profiles/demo
#
# REPORT_PAGE says where each output goes there (category, subcategory), which
# caption describes it (rules/report/*.rst; rules/report/workflow.rst is the
# page's own description, `report:` in the Snakefile) and its format.

from shala.report import OUTPUTS as REPORT_OUTPUTS

_TABLES, _CLAIMS, _FIGURES, _PAGE = "1. Tables", "2. Claims", "3. Figures", "4. Report page"
_T1, _T1_SEEDS = "Table 1: datasets × methods", "Table 1 per seed"
_T2, _PAIRED = "Table 2: published numbers", "Paired tests"
_LEARN = "Did training learn? (per seed)"

_REPORT_LISTED = {
    "table1.csv": (_TABLES, _T1, "table1.rst", "CSV"),
    "table1.md": (_TABLES, _T1, "table1.rst", "Markdown"),
    "table1.tex": (_TABLES, _T1, "table1.rst", "LaTeX"),
    "metrics_long.csv": (_TABLES, _T1_SEEDS, "metrics_long.rst", "CSV"),
    "table2.csv": (_TABLES, _T2, "table2.rst", "CSV"),
    "table2.md": (_TABLES, _T2, "table2.rst", "Markdown"),
    "table2.tex": (_TABLES, _T2, "table2.rst", "LaTeX"),
    "significance.csv": (_TABLES, _PAIRED, "significance.rst", "CSV"),
    "significance.md": (_TABLES, _PAIRED, "significance.rst", "Markdown"),
    "claims.csv": (_CLAIMS, "The paper's claims, checked", "claims.rst", "CSV"),
    "claims.md": (_CLAIMS, "The paper's claims, checked", "claims.rst", "Markdown"),
    "learning.csv": (_TABLES, _LEARN, "learning.rst", "CSV"),
    "learning.md": (_TABLES, _LEARN, "learning.rst", "Markdown"),
    "fig_ambiguity.png": (_FIGURES, "Ambiguity levels", "fig_ambiguity.rst", "PNG"),
    "fig_ambiguity.pdf": (_FIGURES, "Ambiguity levels", "fig_ambiguity.rst", "PDF"),
    "fig_per_class.png": (_FIGURES, "Per class", "fig_per_class.rst", "PNG"),
    "fig_per_class.pdf": (_FIGURES, "Per class", "fig_per_class.rst", "PDF"),
    "fig_training.png": (_FIGURES, "Training curves", "fig_training.rst", "PNG"),
    "fig_training.pdf": (_FIGURES, "Training curves", "fig_training.rst", "PDF"),
    "report.md": (_PAGE, "All results on one page", "report_page.rst", "Markdown"),
}


# every output of `shala report`; one not listed above goes under "Other",
# with a generic caption (tests/integration/test_snakemake_report.py asks for a listing)
REPORT_PAGE = {
    name: _REPORT_LISTED.get(name, ("Other", "Other outputs", "other.rst", name.rsplit(".", 1)[-1].upper()))
    for name in REPORT_OUTPUTS
}


rule report:
    input:
        metrics=REPORT_METRICS,
        per_item=PLAN.metrics(PLAN.report_split, "per_item"),
        runs=PLAN.run_records(),
    output:
        **{
            name.replace(".", "_"): report(
                path("report", results=RES, name=name),
                caption=f"report/{caption}",
                category=category,
                subcategory=subcategory,
                labels={"format": fmt},
            )
            for name, (category, subcategory, caption, fmt) in REPORT_PAGE.items()
        },
    log:
        f"{RES}/logs/report.log",
    params:
        out=lambda w, output: os.path.dirname(output[0]),
        split=PLAN.report_split,
        slice=step_slice("report"),
    resources:
        **job_resources("light"),
    conda:
        "../envs/light.yaml"
    shell:
        "shala report --metrics {input.metrics} --runs {input.runs} --split {params.split}"
        " --out {params.out} --slice {params.slice:q} > {log} 2>&1"
