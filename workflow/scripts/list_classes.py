"""list_classes: the ImageNet-Subset classes drawn as the official code does (seed 1993 over sorted folders)."""
import sys

from ucir.data.sources import imagenet_subset_classes, write_class_list
from stage_job import dataset_root

with open(snakemake.log[0], "w") as log:
    sys.stderr = log
    classes = imagenet_subset_classes(dataset_root(snakemake), snakemake.params.dataset["num_classes"])
    write_class_list(snakemake.output[0], classes)
    print(f"{len(classes)} classes: {' '.join(classes[:10])} ...", file=log)
