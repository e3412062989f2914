"""evaluate_phase: CNN and NME accuracy after phase k, with the run's identity, configuration and provenance."""
from ucir.data import load_run_data
from ucir.evaluate import evaluate_phase
from ucir.io import load_torch, provenance, save_json
from ucir.jobs import job

with job(snakemake.params.run, snakemake.log[0], snakemake.threads) as j:
    data = load_run_data(j.cfg, j.device, workers=snakemake.threads)
    metrics = evaluate_phase(j.cfg, int(snakemake.wildcards.k), load_torch(snakemake.input.model),
                             load_torch(snakemake.input.memory), data, j.device)
    metrics.update(run=snakemake.params.identity, class_order=data.order, config=j.cfg.to_dict(),
                   provenance=provenance(j.device))
    j.log(f"phase {metrics['phase']}: CNN {metrics['cnn']['all']:.2f}"
          + (f", NME {metrics['nme']['all']:.2f}" if metrics["nme"] else ""))
    save_json(metrics, snakemake.output[0])
