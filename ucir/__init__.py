"""ucir: LUCIR (Hou et al., CVPR 2019) and its baselines, as a package the Snakemake workflow calls.

`ucir.load(...)` gives a trained model ready for inference (ucir.inference; imported on first use, so that
importing the package stays light for the workflow)."""

__version__ = "0.1.0"


def __getattr__(name: str):
    if name == "load":
        from .inference import load
        return load
    raise AttributeError(f"module 'ucir' has no attribute {name!r}")
