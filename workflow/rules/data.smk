# Dataset facts recorded next to the results, and the in-memory datasets prepared as arrays for their jobs.


rule prepare_data:
    output:
        directory("results/{dataset}/data"),
    log:
        "logs/{dataset}/prepare_data.log",
    params:
        dataset=get_dataset_params,
        code=CODE["prepare_data"],
    threads: threads_of("prepare_data")
    resources:
        **resources_of("prepare_data"),
    conda:
        "../envs/ucir.yaml"
    script:
        script_of("prepare_data")


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
