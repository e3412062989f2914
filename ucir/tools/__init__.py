"""Tools around the pipeline, not part of it: what a grid costs (plan), the training loop's speed (bench), a job's
start-up (startup) and the first run on a GPU box (gpucheck). Each is `python -m ucir.tools.<name>` and a make
target of the same name (make plan, bench, startup, gpu-check). gpucheck's helpers: jobmemory (the GPU memory a
job needs), gpurecord (the page it writes) and sharing (jobs per GPU, also `python -m ucir.tools.sharing`)."""
