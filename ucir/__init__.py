"""ucir: LUCIR (Hou et al., CVPR 2019) and its baselines, as a package the Snakemake workflow calls."""

__version__ = "0.1.0"
