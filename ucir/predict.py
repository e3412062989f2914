"""Classify images with a trained phase's model, CNN and NME, into a CSV (ucir.inference does the work).

    python -m ucir.predict MODEL INPUT --out predictions.csv [--phase K] [--root DATA] [--labels LABELS.npy]

MODEL: a phase folder, a base model's folder, a model file, or a run folder with --phase (ucir.inference.load).
INPUT: a folder of image files (any depth) or a .npy array of uint8 images. True classes, when known, give the
accuracy: a folder whose images all lie in subfolders named after the model's classes, or --labels, a .npy of the
dataset's class ids, one per image of the array.

The CSV has one row per image: `input` (the file, or the array's row), `label` (the true class, when known), then
for each classifier its predicted class and that class's score (`cnn_class`, `cnn_score`: the head's output;
`nme_class`, `nme_score`: minus the distance to the class mean; no NME columns where the run kept no exemplars).
--all-scores adds one column per class and classifier (`cnn:<class>`, `nme:<class>`).
"""
from __future__ import annotations

import argparse
import csv
import io
import sys
from pathlib import Path

import numpy as np
import torch

from .data.sources import DatasetError
from .inference import LoadError, Model, image_files, load
from .io import save_text


def read_inputs(source: str, model: Model, labels: str | None) -> tuple[list[str], object, list[int] | None]:
    """(names of the inputs, what Model.scores takes, the true output index of each or None)."""
    path = Path(source)
    if path.is_dir():
        if labels is not None:
            raise LoadError("--labels: only for an array input; a folder's labels are its subfolders' names")
        files = image_files(path)
        tops = {f.relative_to(path).parts[0] if len(f.relative_to(path).parts) > 1 else None for f in files}
        truth = None
        if None not in tops and tops <= set(model.classes):
            truth = [model.classes.index(f.relative_to(path).parts[0]) for f in files]
        elif None not in tops:
            print(f"subfolders {', '.join(sorted(tops - set(model.classes))[:5])} of {path} are not classes of this "
                  "model: no true classes, no accuracy")
        return [str(f) for f in files], [str(f) for f in files], truth
    if path.suffix != ".npy" or not path.is_file():
        raise LoadError(f"input {source!r}: a folder of images or a .npy file of uint8 images")
    images = np.load(path, allow_pickle=False)
    truth = None
    if labels is not None:
        ids = np.load(labels, allow_pickle=False)
        if ids.shape != (len(images),):
            raise LoadError(f"--labels {labels}: shape {ids.shape}, expected ({len(images)},), one id per image")
        unknown = sorted(set(ids.tolist()) - set(model.class_ids))
        if unknown:
            raise LoadError(f"--labels {labels}: class ids {unknown[:10]} are not among the {len(model.class_ids)} "
                            f"classes this phase's model has seen")
        truth = [model.class_ids.index(int(i)) for i in ids]
    return [f"{path.name}[{i}]" for i in range(len(images))], images, truth


def prediction_table(names: list[str], classes: list[str], scores: dict[str, torch.Tensor],
                     truth: list[int] | None, all_scores: bool) -> str:
    """The CSV text: one row per input (module docstring)."""
    header = ["input"] + (["label"] if truth is not None else [])
    for clf in scores:
        header += [f"{clf}_class", f"{clf}_score"]
    if all_scores:
        header += [f"{clf}:{c}" for clf in scores for c in classes]
    best = {clf: s.max(dim=1) for clf, s in scores.items()}
    rows = []
    for i, name in enumerate(names):
        row = [name] + ([classes[truth[i]]] if truth is not None else [])
        for clf, (value, index) in best.items():
            row += [classes[int(index[i])], f"{float(value[i]):.6g}"]
        if all_scores:
            row += [f"{float(v):.6g}" for s in scores.values() for v in s[i]]
        rows.append(row)
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    return out.getvalue()


def accuracies(scores: dict[str, torch.Tensor], truth: list[int]) -> dict[str, float]:
    """Top-1 (%) of each classifier, computed as the evaluation does (ucir.evaluate.accuracy)."""
    from .evaluate import accuracy
    t = torch.tensor(truth, dtype=torch.int64)
    return {clf: accuracy(s.argmax(dim=1), t) for clf, s in scores.items()}


def main(argv: list[str] | None = None) -> dict[str, float] | None:
    ap = argparse.ArgumentParser(prog="python -m ucir.predict", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", help="a phase folder, a base model's folder, a model file, or a run folder with --phase")
    ap.add_argument("input", help="a folder of image files, or a .npy array of uint8 images")
    ap.add_argument("--out", required=True, help="the CSV to write")
    ap.add_argument("--phase", type=int, help="with a run folder: the phase (0: the base model)")
    ap.add_argument("--memory", help="the exemplars, where several sit beside a base model (e.g. herding20)")
    ap.add_argument("--root", help="the data folder the run used (NME needs the exemplars' training images)")
    ap.add_argument("--no-nme", action="store_true", help="the CNN only: no exemplars, no data")
    ap.add_argument("--nme-flip", choices=("true", "false"), help="override the run's nme_flip")
    ap.add_argument("--labels", help="with a .npy input: a .npy of the true dataset class ids")
    ap.add_argument("--all-scores", action="store_true", help="one column per class and classifier")
    ap.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N")
    ap.add_argument("--batch-size", type=int, default=512)
    args = ap.parse_args(argv)
    try:
        model = load(args.model, args.phase, memory=args.memory, root=args.root, nme=not args.no_nme,
                     nme_flip=None if args.nme_flip is None else args.nme_flip == "true", device=args.device,
                     batch_size=args.batch_size)
        names, images, truth = read_inputs(args.input, model, args.labels)
        s = model.scores(images)
    except (LoadError, DatasetError, OSError) as e:          # OSError: a file that cannot be read
        sys.exit(f"ucir.predict: {e}")
    scores = {"cnn": s.cnn} if s.nme is None else {"cnn": s.cnn, "nme": s.nme}
    save_text(prediction_table(names, model.classes, scores, truth, args.all_scores), args.out)
    print(f"phase {model.phase} ({model.files.model}), {len(model.classes)} classes, "
          f"{'NME and CNN' if s.nme is not None else 'CNN only (no exemplars)'}: {len(names)} images -> {args.out}")
    if truth is None:
        return None
    acc = accuracies(scores, truth)
    print(", ".join(f"{clf.upper()} accuracy {a:.2f}%" for clf, a in acc.items()))
    return acc


if __name__ == "__main__":
    main()
