# Exemplar memory after each phase (herding on the phase's model, Sec. 4.1). After the base phase it is shared by
# every run with the same base model and memory settings ({memory}: e.g. herding20, or none).


rule select_base_exemplars:
    input:
        unpack(get_base_selection_inputs),
    output:
        "results/{dataset}/base/{base}/seed{seed}/{memory}/memory.pt",
    log:
        "logs/{dataset}/base/{base}/seed{seed}/{memory}/select_exemplars.log",
    benchmark:
        "benchmarks/{dataset}/base/{base}/seed{seed}/{memory}/select_exemplars.tsv"
    params:
        run=get_shared_params("select_exemplars"),
        code=CODE["select_base_exemplars"],
    threads: threads_of("select_base_exemplars")
    resources:
        **resources_of("select_base_exemplars"),
    conda:
        "../envs/ucir.yaml"
    script:
        script_of("select_base_exemplars")


rule select_exemplars:
    input:
        unpack(get_selection_inputs),
    output:
        f"results/{RUN}/phase{{k}}/memory.pt",
    log:
        f"logs/{RUN}/phase{{k}}/select_exemplars.log",
    benchmark:
        f"benchmarks/{RUN}/phase{{k}}/select_exemplars.tsv"
    params:
        run=get_stage_params("select_exemplars"),
        code=CODE["select_exemplars"],
    threads: threads_of("select_exemplars")
    resources:
        **resources_of("select_exemplars"),
    conda:
        "../envs/ucir.yaml"
    script:
        script_of("select_exemplars")
