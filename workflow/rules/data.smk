# Dataset facts recorded next to the results.


rule list_classes:
    output:
        "results/{dataset}/classes.txt",
    log:
        "logs/{dataset}/list_classes.log",
    params:
        dataset=get_dataset_params,
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    conda:
        "../envs/ucir.yaml"
    script:
        "../scripts/list_classes.py"
