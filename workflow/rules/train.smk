# Training: the base model (shared by every run with the same base settings), each incremental phase, and the
# optional class-balance finetune.


rule train_base:
    output:
        "results/{dataset}/base/{base}/seed{seed}/model.pt",
    log:
        "logs/{dataset}/base/{base}/seed{seed}/train_base.log",
        epochs="logs/{dataset}/base/{base}/seed{seed}/train_base.csv",
    benchmark:
        "benchmarks/{dataset}/base/{base}/seed{seed}/train_base.tsv"
    params:
        run=get_shared_params("train_base"),
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
        f"results/{RUN}/phase{{k}}/model.pt",
    log:
        f"logs/{RUN}/phase{{k}}/train_phase.log",
        epochs=f"logs/{RUN}/phase{{k}}/train_phase.csv",
    benchmark:
        f"benchmarks/{RUN}/phase{{k}}/train_phase.tsv"
    params:
        run=get_stage_params("train_phase"),
        code=CODE["train"],
        state=f"results/{RUN}/phase{{k}}/state.pt",
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
        f"results/{RUN}/phase{{k}}/model_cbf.pt",
    log:
        f"logs/{RUN}/phase{{k}}/finetune_balanced.log",
        epochs=f"logs/{RUN}/phase{{k}}/finetune_balanced.csv",
    benchmark:
        f"benchmarks/{RUN}/phase{{k}}/finetune_balanced.tsv"
    params:
        run=get_stage_params("finetune_balanced"),
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
