# Dataset facts recorded next to the results.


rule list_classes:
    output:
        "results/{dataset}/classes.txt",
    log:
        "logs/{dataset}/list_classes.log",
    params:
        dataset=get_dataset_params,
        code=CODE["list_classes"],
    threads: threads_of("list_classes")
    resources:
        **resources_of("list_classes"),
    conda:
        "../envs/ucir.yaml"
    script:
        script_of("list_classes")
