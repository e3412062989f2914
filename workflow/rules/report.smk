# Tables over all runs of a dataset, and the figures drawn from them (each figure its own rule, so restyling a
# plot reruns no training).

FIGURES = ["accuracy"]


rule aggregate:
    input:
        get_dataset_summaries,
    output:
        phases="results/{dataset}/tables/phases.csv",
        summary="results/{dataset}/tables/summary.csv",
        comparison="results/{dataset}/tables/paper_comparison.csv",
    log:
        "logs/{dataset}/aggregate.log",
    params:
        code=CODE["report"],
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    script:
        "../scripts/aggregate.py"


rule plot_accuracy:
    input:
        phases="results/{dataset}/tables/phases.csv",
        summary="results/{dataset}/tables/summary.csv",
    output:
        png="results/{dataset}/figures/accuracy.png",
        pdf="results/{dataset}/figures/accuracy.pdf",
    log:
        "logs/{dataset}/plot_accuracy.log",
    params:
        experiments=get_experiments,
        code=CODE["report"],
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    script:
        "../scripts/plot_accuracy.py"
