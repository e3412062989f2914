"""train_base: the base phase (CE on the base classes)."""
from ucir.data import load_run_data
from ucir.io import save_torch
from stage_job import stage_job
from ucir.train import train_base

with stage_job(snakemake) as j:
    data = load_run_data(j.cfg, j.device, workers=j.workers, test=False, prepared=j.prepared)
    ckpt = train_base(j.cfg, data, j.device, j.log, state_path=snakemake.params.state)
    save_torch(ckpt, snakemake.output[0])
