"""train_base: the base phase (CE on the base classes)."""
from ucir.data import load_run_data
from ucir.grid import execution_settings
from ucir.io import save_torch
from ucir.jobs import job
from ucir.train import train_base

with job(snakemake.params.run, execution_settings(snakemake.config, snakemake.wildcards.dataset),
         snakemake.log[0], snakemake.threads) as j:
    data = load_run_data(j.cfg, j.device, workers=j.workers, test=False)
    ckpt = train_base(j.cfg, data, j.device, j.log, state_path=snakemake.params.state)
    save_torch(ckpt, snakemake.output[0])
