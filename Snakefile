# ucir: LUCIR (Hou et al., CVPR 2019) as cached per-phase stages.
#
#   snakemake --cores 2 --configfile configs/demo.yaml      # the CPU demo (default when no config is given: config.yaml)
#
# results/
#   {dataset}/base/{base}/seed{seed}/model.pt                  train_base (shared by every run with that base)
#   {dataset}/{method}/{variant}/p{phases}/seed{seed}/
#       phase{k}/memory.pt                                     select_exemplars (after phase k, k = 0..P)
#       phase{k}/model.pt                                      train_phase (k = 1..P)
#       phase{k}/model_cbf.pt                                  finetune_balanced (variants with cbf)
#       phase{k}/metrics.json                                  evaluate_phase (k = 0..P)
#       summary.json, phases.csv                               summarize_run
#   {dataset}/tables/{phases,summary,paper_comparison}.csv     aggregate
#   {dataset}/figures/*.png|pdf                                plot_*
# logs/ and benchmarks/ mirror these paths.

from snakemake.utils import min_version

min_version("9.0")

if not config:

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
