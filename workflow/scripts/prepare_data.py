"""prepare_data: an in-memory dataset (CIFAR-100's pickles, Fashion-MNIST's idx files) read once and written as the
arrays that every stage job of the dataset memory-maps (ucir.data.prepared)."""
import sys

from ucir.data import prepare_dataset
from stage_job import dataset_settings

with open(snakemake.log[0], "w") as log:
    sys.stderr = log
    settings = dataset_settings(snakemake)
    files = prepare_dataset(snakemake.params.dataset["source"], settings["root"], snakemake.output[0],
                            download=settings.get("download", False))
    print(f"{snakemake.params.dataset['source']} from {settings['root']}: {', '.join(files)}", file=log)
