"""list_classes: the ImageNet-Subset classes drawn as the official code does (seed 1993 over sorted folders)."""
import sys

from ucir.data.sources import imagenet_subset_classes, write_class_list
from ucir.grid import execution_settings

with open(snakemake.log[0], "w") as log:
    sys.stderr = log
    root = execution_settings(snakemake.config, snakemake.wildcards.dataset)["root"]
    classes = imagenet_subset_classes(root, snakemake.params.dataset["num_classes"])
    write_class_list(snakemake.output[0], classes)
    print(f"{len(classes)} classes: {' '.join(classes[:10])} ...", file=log)
