# Tables over all runs of a dataset, and the figures: each figure its own rule reading the summaries or metrics of
# the runs it draws and the dataset's claims table (its verdicts: Holm's family is the whole table), so restyling a
# plot reruns no training and editing one experiment reruns no other experiment's runs, only the table and the
# figures that give its answers. Every output is marked for `snakemake --report`, with its
# caption in workflow/report/. A figure whose runs the configuration lacks is still written, saying so.

include: "report_common.smk"


report: "../report/workflow.rst"


rule aggregate:
    input:
        get_dataset_summaries,
    output:
        **{t: report_table(t) for t in TABLES},
        html=report_table("tables", ext="html", label=f"all {len(TABLES)} tables (HTML view)"),
    log:
        "logs/{dataset}/aggregate.log",
    params:
        code=CODE["aggregate"],
    threads: threads_of("aggregate")
    resources:
        **resources_of("aggregate"),
    conda:
        "../envs/ucir.yaml"
    script:
        script_of("aggregate")


rule plot_accuracy:
    input:
        unpack(get_plot_inputs("accuracy")),
    output:
        **report_figure("accuracy", "Fig. 5/6: accuracy after each phase"),
    log:
        "logs/{dataset}/plot_accuracy.log",
    params:
        figure="accuracy",
        experiments=get_plot_experiments("accuracy"),
        code=CODE["plot_accuracy"],
    threads: threads_of("plot_accuracy")
    resources:
        **resources_of("plot_accuracy"),
    conda:
        "../envs/ucir.yaml"
    script:
        script_of("plot_accuracy")


rule plot_weight_norms:
    input:
        unpack(get_head_inputs),
    output:
        **report_figure("weight_norms", "Fig. 3: last-layer weight norms and biases"),
    log:
        "logs/{dataset}/plot_weight_norms.log",
    params:
        code=CODE["plot_weight_norms"],
    threads: threads_of("plot_weight_norms")
    resources:
        **resources_of("plot_weight_norms"),
    conda:
        "../envs/ucir.yaml"
    script:
        script_of("plot_weight_norms")


rule plot_components:
    input:
        unpack(get_plot_inputs("components")),
    output:
        **report_figure("components", "Fig. 7(a): effect of each component"),
    log:
        "logs/{dataset}/plot_components.log",
    params:
        figure="components",
        experiments=get_plot_experiments("components"),
        code=CODE["plot_components"],
    threads: threads_of("plot_components")
    resources:
        **resources_of("plot_components"),
    conda:
        "../envs/ucir.yaml"
    script:
        script_of("plot_components")


rule plot_memory:
    input:
        unpack(get_plot_inputs("memory")),
    output:
        **report_figure("memory", "Fig. 7(b): reserved samples per class"),
    log:
        "logs/{dataset}/plot_memory.log",
    params:
        figure="memory",
        experiments=get_plot_experiments("memory"),
        code=CODE["plot_memory"],
    threads: threads_of("plot_memory")
    resources:
        **resources_of("plot_memory"),
    conda:
        "../envs/ucir.yaml"
    script:
        script_of("plot_memory")


rule plot_adaptive_weight:
    input:
        unpack(get_plot_inputs("adaptive_weight")),
    output:
        **report_figure("adaptive_weight", "Fig. 8: adaptive vs fixed loss weight"),
    log:
        "logs/{dataset}/plot_adaptive_weight.log",
    params:
        figure="adaptive_weight",
        experiments=get_plot_experiments("adaptive_weight"),
        code=CODE["plot_adaptive_weight"],
    threads: threads_of("plot_adaptive_weight")
    resources:
        **resources_of("plot_adaptive_weight"),
    conda:
        "../envs/ucir.yaml"
    script:
        script_of("plot_adaptive_weight")


rule plot_confusion:
    input:
        unpack(get_confusion_inputs),
    output:
        **report_figure("confusion", "Fig. 9: confusion matrices"),
    log:
        "logs/{dataset}/plot_confusion.log",
    params:
        methods=list(CONFUSION_RUNS),
        code=CODE["plot_confusion"],
    threads: threads_of("plot_confusion")
    resources:
        **resources_of("plot_confusion"),
    conda:
        "../envs/ucir.yaml"
    script:
        script_of("plot_confusion")
