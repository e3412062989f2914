"""The one adapter between a Snakemake job and the package, for every script that runs a stage: the job's settings
(its params, ucir.deps.stage_settings), its dataset's execution settings (the config's top level, then the
dataset's own: ucir.grid.execution_settings), its log and its threads go to ucir.jobs.job. The only place a script
reads snakemake.config."""
from ucir.grid import execution_settings
from ucir.jobs import job
from ucir.pipeline import rule


def stage_job(snakemake):
    """`with stage_job(snakemake) as j:` the job's RunConfig (j.cfg), device, log, loader workers and the folder of
    its dataset's prepared arrays (j.prepared: its `data` input, None where the dataset has none)."""
    prepared = snakemake.input.data if "data" in snakemake.input.keys() else None
    return job(snakemake.params.run, dataset_settings(snakemake), snakemake.log[0], snakemake.threads,
               prepared=prepared, inference=rule(snakemake.rule).inference_only)


def dataset_settings(snakemake) -> dict:
    """The execution settings of the job's dataset (where it lies, whether to download it, ...)."""
    return execution_settings(snakemake.config, snakemake.wildcards.dataset)


def dataset_root(snakemake) -> str:
    """Where the job's dataset lies (an execution setting)."""
    return dataset_settings(snakemake)["root"]
