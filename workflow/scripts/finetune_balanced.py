"""finetune_balanced: class-balance finetune (CBF) of phase k's model on the balanced exemplar set."""
from ucir.data import load_run_data
from ucir.io import load_torch, save_torch
from stage_job import stage_job
from ucir.train import class_balance_finetune

with stage_job(snakemake) as j:
    data = load_run_data(j.cfg, j.device, workers=j.workers, test=False, prepared=j.prepared)
    ckpt = class_balance_finetune(j.cfg, int(snakemake.wildcards.k), load_torch(snakemake.input.model),
                                  load_torch(snakemake.input.previous), load_torch(snakemake.input.memory),
                                  data, j.device, j.log, state_path=snakemake.params.state)
    save_torch(ckpt, snakemake.output[0])
