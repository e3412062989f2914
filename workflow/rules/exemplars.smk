# Exemplar memory after each phase (herding on the phase's model, Sec. 4.1).


rule select_exemplars:
    input:
        unpack(get_selection_inputs),
    output:
        f"{RUN_DIR}/phase{{k}}/memory.pt",
    log:
        f"{LOG_DIR}/phase{{k}}/select_exemplars.log",
    params:
        run=get_phase_params,
        code=CODE["select_exemplars"],
    threads: 1
    resources:
        mem_mb=8000,
        runtime=120,
    conda:
        "../envs/ucir.yaml"
    script:
        "../scripts/select_exemplars.py"
