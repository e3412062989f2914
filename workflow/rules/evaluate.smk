# Evaluation after every phase (CNN and NME, all/old/new classes) and the per-run summary. After the base phase it
# is shared by every run with the same base model and memory ({evaluation}: metrics, or metrics_noflip).


rule evaluate_base:
    input:
        unpack(get_base_eval_inputs),
    output:
        "results/{dataset}/base/{base}/seed{seed}/{memory}/{evaluation}.json",
    log:
        "logs/{dataset}/base/{base}/seed{seed}/{memory}/evaluate_{evaluation}.log",
    benchmark:
        "benchmarks/{dataset}/base/{base}/seed{seed}/{memory}/evaluate_{evaluation}.tsv"
    params:
        run=get_shared_params("evaluate_phase"),
        code=CODE["evaluate_base"],
    threads: threads_of("evaluate_base")
    resources:
        **resources_of("evaluate_base"),
    conda:
        "../envs/ucir.yaml"
    script:
        script_of("evaluate_base")


rule evaluate_phase:
    input:
        unpack(get_eval_inputs),
    output:
        f"results/{RUN}/phase{{k}}/metrics.json",
    log:
        f"logs/{RUN}/phase{{k}}/evaluate_phase.log",
    benchmark:
        f"benchmarks/{RUN}/phase{{k}}/evaluate_phase.tsv"
    params:
        run=get_stage_params("evaluate_phase"),
        identity=get_run_identity,
        code=CODE["evaluate_phase"],
    threads: threads_of("evaluate_phase")
    resources:
        **resources_of("evaluate_phase"),
    conda:
        "../envs/ucir.yaml"
    script:
        script_of("evaluate_phase")


rule summarize_run:
    input:
        get_run_metrics,
    output:
        summary=f"results/{RUN}/summary.json",
        table=f"results/{RUN}/phases.csv",
    log:
        f"logs/{RUN}/summarize_run.log",
    params:
        identity=get_run_identity,
        settings=get_run_settings,
        code=CODE["summarize_run"],
    threads: threads_of("summarize_run")
    resources:
        **resources_of("summarize_run"),
    conda:
        "../envs/ucir.yaml"
    script:
        script_of("summarize_run")
