"""select_exemplars / select_base_exemplars: herding for the classes new in phase k (0: the base classes); shrink
old classes under a fixed total."""
from ucir.data import load_run_data
from ucir.exemplars import select_exemplars
from ucir.io import load_torch, save_torch
from stage_job import stage_job

with stage_job(snakemake) as j:
    data = load_run_data(j.cfg, j.device, workers=j.workers, test=False, prepared=j.prepared)
    previous = load_torch(snakemake.input.memory) if "memory" in snakemake.input.keys() else None
    memory = select_exemplars(j.cfg, int(snakemake.wildcards.get("k", 0)), load_torch(snakemake.input.model),
                              previous, data, j.device, j.log, per_class=j.exemplars_per_class)
    save_torch(memory, snakemake.output[0])
