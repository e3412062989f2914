# ucir: LUCIR (Hou et al., CVPR 2019) as cached per-phase stages.
#
#   snakemake --cores 2 --configfile configs/demo.yaml      # the CPU demo (default when no config is given: config.yaml)
#
# results/
#   {dataset}/base/{base}/seed{seed}/                          shared by every run with that base model:
#       model.pt                                               train_base
#       {memory}/memory.pt                                     select_base_exemplars (after the base phase)
#       {memory}/metrics.json                                  evaluate_base (metrics_noflip.json: nme_flip false)
#   {dataset}/{method}/{variant}/p{phases}/seed{seed}/
#       phase{k}/model.pt                                      train_phase (k = 1..P)
#       phase{k}/memory.pt                                     select_exemplars (after phase k)
#       phase{k}/model_cbf.pt                                  finetune_balanced (variants with cbf)
#       phase{k}/metrics.json                                  evaluate_phase
#       summary.json, phases.csv                               summarize_run (phase 0 included)
#   {dataset}/tables/{phases,accuracy_matrix,claims,summary,paper_comparison}.csv   aggregate
#   {dataset}/figures/*.png|pdf                                plot_*
# logs/ and benchmarks/ mirror these paths.

from snakemake.utils import min_version

min_version("9.0")

# config.yaml unless --configfile names others; --config key=value applies on top of either.
if not workflow.overwrite_configfiles:

    configfile: "config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/exemplars.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/report.smk"



rule all:
    input:
        get_final_outputs(),
    default_target: True


# The rules of this workflow are those of the table in ucir/pipeline.py, which the plan, the code hashes and the
# tools read: stop before any job when they differ.
_mismatch = rule_mismatch(r.name for r in workflow.rules)
if _mismatch:
    raise WorkflowError(f"workflow/rules and ucir.pipeline.RULES differ: {_mismatch}")
