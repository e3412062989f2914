"""The one adapter between a Snakemake job and the package, for every script that runs a stage: the job's settings
(its params, ucir.deps.stage_settings), its dataset's execution settings (the config's top level, then the
dataset's own: ucir.grid.execution_settings), its log and its threads go to ucir.jobs.job. The only place a script
reads snakemake.config."""
from ucir.grid import execution_settings
from ucir.jobs import job


def stage_job(snakemake):
    """`with stage_job(snakemake) as j:` the job's RunConfig (j.cfg), device, log and loader workers."""
    return job(snakemake.params.run, execution_settings(snakemake.config, snakemake.wildcards.dataset),
               snakemake.log[0], snakemake.threads)


def dataset_root(snakemake) -> str:
    """Where the job's dataset lies (an execution setting)."""
    return execution_settings(snakemake.config, snakemake.wildcards.dataset)["root"]
