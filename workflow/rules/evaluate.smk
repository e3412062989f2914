# Evaluation after every phase (CNN and NME, all/old/new classes) and the per-run summary.


rule evaluate_phase:
    input:
        unpack(get_eval_inputs),
    output:
        f"{RUN_DIR}/phase{{k}}/metrics.json",
    log:
        f"{LOG_DIR}/phase{{k}}/evaluate_phase.log",
    benchmark:
        f"{BENCH_DIR}/phase{{k}}/evaluate_phase.tsv"
    params:
        run=get_phase_params,
        identity=get_run_identity,
        code=CODE["evaluate"],
    threads: 1
    resources:
        gpu=1,
        mem_mb=8000,
        runtime=120,
    conda:
        "../envs/ucir.yaml"
    script:
        "../scripts/evaluate_phase.py"


rule summarize_run:
    input:
        get_run_metrics,
    output:
        summary=f"{RUN_DIR}/summary.json",
        table=f"{RUN_DIR}/phases.csv",
    log:
        f"{LOG_DIR}/summarize_run.log",
    params:
        identity=get_run_identity,
        code=CODE["report"],
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../envs/ucir.yaml"
    script:
        "../scripts/summarize_run.py"
