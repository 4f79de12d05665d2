# shala: regenerate every SHALA-LLM result from raw public data.
#
#   snakemake --cores all --resources gpu=2          # the paper (config.yaml)
#   snakemake --profile profiles/demo                # CPU demo, SmolLM2
#   snakemake --profile profiles/slurm               # SLURM cluster
#
# Stages, one rules file each: data -> model -> train -> predict -> evaluate -> report.
# Rules only call the `shala` CLI; the logic lives in src/shala/.

import os
import sys

from snakemake.utils import min_version

min_version("9.0")


configfile: "config.yaml"


# A profile's own overlays (config `overlays`, set by its `config:` entry) go
# between config.yaml and the user's --configfile / --config, which Snakemake
# lays over again after each file: `--profile profiles/demo --configfile
# mine.yaml` is the demo plus mine.yaml (docs/design.md §8.5).
for _overlay in config.get("overlays") or []:
    if not os.path.isfile(_overlay):
        sys.exit(f"shala: overlays: {_overlay} does not exist (named by a profile's config: or a config file)")
    workflow.configfile(_overlay)


# `snakemake --report report.html` after a run: one self-contained page with
# the figures, tables and claims (flagged in rules/report.smk), this text on top.
report: "rules/report/workflow.rst"


include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/model.smk"
include: "rules/train.smk"
include: "rules/predict.smk"
include: "rules/evaluate.smk"
include: "rules/report.smk"


# The downloads run where Snakemake runs (on a cluster: the login node, as
# compute nodes often have no internet); every other job may be submitted.
# fetch_model, the hub model's download, is local too: it says so itself
# (`localrule: True` in rules/model.smk), as it exists only for a hub model.
localrules:
    all,
    fetch_data,


rule all:
    default_target: True
    input:
        PLAN.final_outputs(),
