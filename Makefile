# Everything the project needs is installed by this file: a virtual environment in .venv with torch and
# torchvision pinned by constraints.txt, then the package itself in editable mode.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
CORES  ?= 2
SMK    := $(BIN)/snakemake --cores $(CORES) --printshellcmds
# CPU runs: training jobs on one thread each, side by side (faster on 2 cores than one job on two threads:
# docs/benchmarks.md)
CPU    := --set-threads train_base=1 train_phase=1 finetune_balanced=1

.PHONY: setup demo test test-fast lint bench plan startup gpu-check fmnist-data fmnist fmnist-main fmnist-ablations \
	fmnist-2x fmnist-docs fmnist-precision report dryrun-paper clean

## PyPI's torch by default (its Linux wheels bundle CUDA). On a CPU-only machine, PyTorch's CPU build, same pins,
## several GB smaller: make setup TORCH_INDEX=https://download.pytorch.org/whl/cpu (on a fresh clone, or after
## rm -rf .venv). The index serves torch and torchvision only; everything else still comes from PyPI.
TORCH_INDEX ?=

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c constraints.txt torch torchvision$(if $(TORCH_INDEX), --index-url $(TORCH_INDEX))
	$(BIN)/pip install -q -c constraints.txt -e '.[test,slurm]'
	touch $@

## The embedded default: the synthetic demo, every stage and plot, on CPU in a few minutes.
demo: $(STAMP)
	$(SMK) $(CPU) --configfile configs/demo.yaml
	@echo "tables: results/synthetic/tables/   figures: results/synthetic/figures/   report: make report"

## The whole test suite (unit, workflow caching, lint, slurm when available).
test: $(STAMP)
	$(BIN)/python -m pytest -q

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not workflow and not slurm"

lint: $(STAMP)
	$(SMK) --lint --configfile configs/demo.yaml

## PRECISION=fp32|tf32|bf16: the training precision measured (default fp32, a configuration's default).
PRECISION ?= fp32
bench: $(STAMP)
	$(BIN)/python -m ucir.tools.bench --device auto --precision $(PRECISION)

## What a configuration costs, in seconds and without data: runs, jobs per rule, Slurm allocations, image passes;
## device-hours with a throughput: make plan THROUGHPUT=<training images/s>, or make bench | tee bench.txt, then
## make plan BENCH=bench.txt. docs/running.md: What a grid costs.
CONFIG     ?= config.yaml
THROUGHPUT ?=
BENCH      ?=
plan: $(STAMP)
	$(BIN)/python -m ucir.tools.plan --configfile $(CONFIG) $(if $(THROUGHPUT),--throughput $(THROUGHPUT)) \
	  $(if $(BENCH),--bench $(BENCH))

## Seconds each rule's job spends before its first training or inference step (docs/benchmarks.md).
startup: $(STAMP)
	$(BIN)/python -m ucir.tools.startup

## First run on a new GPU box (<= 10 min on one H100): environment, bench, determinism, images/s per precision, a
## CIFAR-100-shaped 10-phase schedule per precision with its 160-epoch estimate, 1/2/4/8 jobs per GPU, the CUDA
## tests; it writes docs/gpu-check/<GPU>.md, ready to commit. docs/gpu.md.
## CPU dry run: make gpu-check GPU_CHECK="--device cpu --tiny"
GPU_CHECK ?=
gpu-check: $(STAMP)
	$(BIN)/python -m ucir.tools.gpucheck $(GPU_CHECK)

## Real images on CPU: Debian's Fashion-MNIST package (needs root for apt-get).
fmnist-data:
	test -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz || \
	  (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist)

## The Fashion-MNIST study (docs/results.md): the main comparison over 10 class orders at the protocol's budget and
## at twice its epochs, the ablations over 5. It runs in sittings of under 2 h each on 2 idle cores, in any order
## and on any machine: each trains its runs (ORDERS=1993-1997: those class orders only), skipping the runs whose
## records are kept under docs/runs/, then keeps theirs there (ucir.tools.records save) to be committed; an
## interrupted sitting resumes where it stopped.
##   make fmnist-main [ORDERS=...]       the main comparison at the protocol's budget
##   make fmnist-ablations [ORDERS=...]  Figs. 7a, 7b, 8
##   make fmnist-2x [ORDERS=...]         the main comparison at twice the epochs
## make fmnist-docs then makes the tables and figures from the kept records alone (no training) and copies them
## into docs/tables/ and docs/figures/; make fmnist runs every sitting, then fmnist-docs.
FMNIST    := configs/fashion_mnist.yaml
FMNIST_2X := configs/fashion_mnist_2x.yaml
ORDERS    ?=
RECORDS   := $(BIN)/python -m ucir.tools.records
# $(call sitting,CONFIG,TARGETS ARGUMENTS): the runs still to do, trained, then their records kept
sitting = t=$$($(BIN)/python -m ucir.tools.targets --configfile $(1) $(2) $(if $(ORDERS),--seeds $(ORDERS)) \
	  --skip-kept docs/runs) && { test -z "$$t" || $(SMK) $$t $(CPU) --configfile $(1); } && \
	  $(RECORDS) save --configfile $(1)

fmnist: fmnist-main fmnist-ablations fmnist-2x
	$(MAKE) fmnist-docs

fmnist-main: $(STAMP) fmnist-data
	$(call sitting,$(FMNIST),--experiments main)

fmnist-ablations: $(STAMP) fmnist-data
	$(call sitting,$(FMNIST),--experiments components memory adaptive_weight)

fmnist-2x: $(STAMP) fmnist-data
	$(call sitting,$(FMNIST_2X),)

## The study's tables (every run x phase in phases.csv), its training curves' summary, the claims at both budgets
## side by side and its figures, made from the records under docs/runs/ and copied into docs/tables/ and
## docs/figures/ for docs/results.md; and the 20-epoch claims beside those of the first sitting, which ran on
## another machine before records were kept (its tables: docs/tables/fashion_mnist_first_sitting/).
fmnist-docs: $(STAMP)
	set -e; for c in $(FMNIST) $(FMNIST_2X); do $(RECORDS) report --configfile $$c; done
	set -e; for ds in fashion_mnist fashion_mnist_2x; do \
	  mkdir -p docs/tables/$$ds docs/figures/$$ds; \
	  cp results/$$ds/tables/*.csv docs/tables/$$ds/; cp results/$$ds/figures/*.png docs/figures/$$ds/; \
	  $(BIN)/python -m ucir.tools.curves docs/runs/logs/$$ds --csv docs/tables/$$ds/curves.csv > /dev/null; done
	$(BIN)/python -m ucir.tools.compare_claims results/fashion_mnist/tables/claims.csv \
	  results/fashion_mnist_2x/tables/claims.csv --names 20_epochs 40_epochs --csv docs/tables/claims_by_budget.csv
	$(BIN)/python -m ucir.tools.compare_claims docs/tables/fashion_mnist_first_sitting/claims.csv \
	  results/fashion_mnist/tables/claims.csv --names first_machine this_machine --csv docs/tables/claims_by_machine.csv

## The bf16 control (docs/benchmarks.md): LUCIR and iCaRL trained in fp32 and in bf16 on Fashion-MNIST, 3 class orders.
fmnist-precision: $(STAMP) fmnist-data
	$(SMK) $(CPU) --configfile configs/fashion_mnist_precision.yaml

## One HTML file with every figure and table of the demo (after `make demo`).
report: $(STAMP)
	$(SMK) --configfile configs/demo.yaml --report results/report.html
	@echo "open results/report.html"

## What the paper's CIFAR-100 grid (config.yaml) would run, with its shared base models.
dryrun-paper: $(STAMP)
	mkdir -p data/cifar100
	$(SMK) --dry-run --quiet rules

clean:
	rm -rf results .snakemake
