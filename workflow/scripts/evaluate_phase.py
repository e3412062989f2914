"""evaluate_phase / evaluate_base: CNN and NME accuracy after phase k (0: the base phase), with the settings it
depends on, the run's identity (phases >= 1; the base phase's evaluation is shared by runs) and provenance."""
from ucir.data import load_run_data
from ucir.evaluate import evaluate_phase
from ucir.io import load_torch, provenance, save_json
from stage_job import stage_job

with stage_job(snakemake) as j:
    data = load_run_data(j.cfg, j.device, workers=j.workers, prepared=j.prepared)
    metrics = evaluate_phase(j.cfg, int(snakemake.wildcards.get("k", 0)), load_torch(snakemake.input.model),
                             load_torch(snakemake.input.memory), data, j.device, j.log)
    metrics.update(class_order=data.order, config=snakemake.params.run, provenance=provenance(j.device))
    if "identity" in snakemake.params.keys():
        metrics["run"] = snakemake.params.identity
    j.log(f"phase {metrics['phase']}: CNN {metrics['cnn']['all']:.2f}"
          + (f", NME {metrics['nme']['all']:.2f}" if metrics["nme"] else ""))
    save_json(metrics, snakemake.output[0])
