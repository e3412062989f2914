# Training: the base model (shared by every run with the same base settings), each incremental phase, and the
# optional class-balance finetune.


rule train_base:
    input:
        unpack(get_data_inputs),
    output:
        "results/{dataset}/base/{base}/seed{seed}/model.pt",
    log:
        "logs/{dataset}/base/{base}/seed{seed}/train_base.log",
        epochs="logs/{dataset}/base/{base}/seed{seed}/train_base.csv",
    benchmark:
        "benchmarks/{dataset}/base/{base}/seed{seed}/train_base.tsv"
    params:
        run=get_shared_params("train_base"),
        code=CODE["train_base"],
        state="results/{dataset}/base/{base}/seed{seed}/state.pt",
    threads: threads_of("train_base")
    resources:
        **resources_of("train_base"),
    conda:
        "../envs/ucir.yaml"
    script:
        script_of("train_base")


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
        code=CODE["train_phase"],
        state=f"results/{RUN}/phase{{k}}/state.pt",
    threads: threads_of("train_phase")
    resources:
        **resources_of("train_phase"),
    conda:
        "../envs/ucir.yaml"
    script:
        script_of("train_phase")


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
        code=CODE["finetune_balanced"],
        state=f"results/{RUN}/phase{{k}}/state_cbf.pt",
    threads: threads_of("finetune_balanced")
    resources:
        **resources_of("finetune_balanced"),
    conda:
        "../envs/ucir.yaml"
    script:
        script_of("finetune_balanced")
