# Training: the base model (shared by every run with the same base settings), each incremental phase, and the
# optional class-balance finetune.


rule train_base:
    output:
        "results/{dataset}/base/{base}/seed{seed}/model.pt",
    log:
        "logs/{dataset}/base/{base}/seed{seed}/train_base.log",
    benchmark:
        "benchmarks/{dataset}/base/{base}/seed{seed}/train_base.tsv"
    params:
        run=get_base_params,
        code=CODE["train"],
        state="results/{dataset}/base/{base}/seed{seed}/state.pt",
    threads: 2
    resources:
        gpu=1,
        mem_mb=16000,
        runtime=720,
    conda:
        "../envs/ucir.yaml"
    script:
        "../scripts/train_base.py"


rule train_phase:
    input:
        unpack(get_phase_inputs),
    output:
        f"{RUN_DIR}/phase{{k}}/model.pt",
    log:
        f"{LOG_DIR}/phase{{k}}/train_phase.log",
    benchmark:
        f"{BENCH_DIR}/phase{{k}}/train_phase.tsv"
    params:
        run=get_run_params,
        code=CODE["train"],
        state=f"{RUN_DIR}/phase{{k}}/state.pt",
    threads: 2
    resources:
        gpu=1,
        mem_mb=16000,
        runtime=720,
    conda:
        "../envs/ucir.yaml"
    script:
        "../scripts/train_phase.py"


rule finetune_balanced:
    input:
        unpack(get_cbf_inputs),
    output:
        f"{RUN_DIR}/phase{{k}}/model_cbf.pt",
    log:
        f"{LOG_DIR}/phase{{k}}/finetune_balanced.log",
    benchmark:
        f"{BENCH_DIR}/phase{{k}}/finetune_balanced.tsv"
    params:
        run=get_run_params,
        code=CODE["train"],
    threads: 2
    resources:
        gpu=1,
        mem_mb=16000,
        runtime=240,
    conda:
        "../envs/ucir.yaml"
    script:
        "../scripts/finetune_balanced.py"
