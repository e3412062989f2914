"""finetune_balanced: class-balance finetune (CBF) of phase k's model on the balanced exemplar set."""
from ucir.data import load_run_data
from ucir.grid import execution_settings
from ucir.io import load_torch, save_torch
from ucir.jobs import job
from ucir.train import class_balance_finetune

with job(snakemake.params.run, execution_settings(snakemake.config, snakemake.wildcards.dataset),
         snakemake.log[0], snakemake.threads) as j:
    data = load_run_data(j.cfg, j.device, workers=j.workers, test=False)
    ckpt = class_balance_finetune(j.cfg, int(snakemake.wildcards.k), load_torch(snakemake.input.model),
                                  load_torch(snakemake.input.previous), load_torch(snakemake.input.memory),
                                  data, j.device, j.log)
    save_torch(ckpt, snakemake.output[0])
