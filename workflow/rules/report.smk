# Tables over all runs of a dataset, and the figures: each figure its own rule reading only the per-run tables or
# metrics of the runs it draws, so restyling a plot reruns no training and editing one experiment reruns only its
# own figures. Every output is marked for `snakemake --report`, with its
# caption in workflow/report/. A figure whose runs the configuration lacks is still written, saying so.

include: "report_common.smk"


report: "../report/workflow.rst"


rule aggregate:
    input:
        get_dataset_summaries,
    output:
        phases=report_table("phases"),
        summary=report_table("summary"),
        comparison=report_table("paper_comparison"),
        accuracy_matrix=report_table("accuracy_matrix"),
        claims=report_table("claims"),
        html=report_table("tables", ext="html", label="all three tables (HTML view)"),
    log:
        "logs/{dataset}/aggregate.log",
    params:
        code=CODE["report"],
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../envs/ucir.yaml"
    script:
        "../scripts/aggregate.py"


rule plot_accuracy:
    input:
        get_plot_inputs("accuracy"),
    output:
        **report_figure("accuracy", "Fig. 5/6: accuracy after each phase"),
    log:
        "logs/{dataset}/plot_accuracy.log",
    params:
        experiments=get_plot_experiments("accuracy"),
        code=CODE["report"],
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../envs/ucir.yaml"
    script:
        "../scripts/plot_experiment.py"


rule plot_weight_norms:
    input:
        unpack(get_head_inputs),
    output:
        **report_figure("weight_norms", "Fig. 3: last-layer weight norms and biases"),
    log:
        "logs/{dataset}/plot_weight_norms.log",
    params:
        code=CODE["report"],
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../envs/ucir.yaml"
    script:
        "../scripts/plot_weight_norms.py"


rule plot_components:
    input:
        get_plot_inputs("components"),
    output:
        **report_figure("components", "Fig. 7(a): effect of each component"),
    log:
        "logs/{dataset}/plot_components.log",
    params:
        experiments=get_plot_experiments("components"),
        code=CODE["report"],
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../envs/ucir.yaml"
    script:
        "../scripts/plot_experiment.py"


rule plot_memory:
    input:
        get_plot_inputs("memory"),
    output:
        **report_figure("memory", "Fig. 7(b): reserved samples per class"),
    log:
        "logs/{dataset}/plot_memory.log",
    params:
        experiments=get_plot_experiments("memory"),
        code=CODE["report"],
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../envs/ucir.yaml"
    script:
        "../scripts/plot_experiment.py"


rule plot_adaptive_weight:
    input:
        get_plot_inputs("adaptive_weight"),
    output:
        **report_figure("adaptive_weight", "Fig. 8: adaptive vs fixed loss weight"),
    log:
        "logs/{dataset}/plot_adaptive_weight.log",
    params:
        experiments=get_plot_experiments("adaptive_weight"),
        code=CODE["report"],
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../envs/ucir.yaml"
    script:
        "../scripts/plot_experiment.py"


rule plot_confusion:
    input:
        unpack(get_confusion_inputs),
    output:
        **report_figure("confusion", "Fig. 9: confusion matrices"),
    log:
        "logs/{dataset}/plot_confusion.log",
    params:
        methods=list(CONFUSION_RUNS),
        code=CODE["report"],
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../envs/ucir.yaml"
    script:
        "../scripts/plot_confusion.py"
