"""train_phase: incremental phase k from phase k-1's model and memory."""
from ucir.data import load_run_data
from ucir.io import load_torch, save_torch
from stage_job import stage_job
from ucir.train import train_phase

with stage_job(snakemake) as j:
    data = load_run_data(j.cfg, j.device, workers=j.workers, test=False, prepared=j.prepared)
    ckpt = train_phase(j.cfg, int(snakemake.wildcards.k), load_torch(snakemake.input.model),
                       load_torch(snakemake.input.memory), data, j.device, j.log, state_path=snakemake.params.state)
    save_torch(ckpt, snakemake.output[0])
