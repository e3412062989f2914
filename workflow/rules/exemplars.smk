# Exemplar memory after each phase (herding on the phase's model, Sec. 4.1). After the base phase it is shared by
# every run with the same base model and memory settings ({memory}: e.g. herding20, or none).


rule select_base_exemplars:
    input:
        unpack(get_base_selection_inputs),
    output:
        "results/{dataset}/base/{base}/seed{seed}/{memory}/memory.pt",
    log:
        "logs/{dataset}/base/{base}/seed{seed}/{memory}/select_exemplars.log",
    params:
        run=get_shared_params("select_exemplars"),
        code=CODE["select_exemplars"],
    threads: 1
    resources:
        gpu=1,
        mem_mb=8000,
        runtime=120,
    conda:
        "../envs/ucir.yaml"
    script:
        "../scripts/select_exemplars.py"


rule select_exemplars:
    input:
        unpack(get_selection_inputs),
    output:
        f"results/{RUN}/phase{{k}}/memory.pt",
    log:
        f"logs/{RUN}/phase{{k}}/select_exemplars.log",
    params:
        run=get_stage_params("select_exemplars"),
        code=CODE["select_exemplars"],
    threads: 1
    resources:
        gpu=1,
        mem_mb=8000,
        runtime=120,
    conda:
        "../envs/ucir.yaml"
    script:
        "../scripts/select_exemplars.py"
