"""Subcommands of the `sertune` command line, one module each (see sertune.cli).

`SUMMARIES` names every command with its one-line help, so that `sertune --help` lists them without
importing a single command module.
"""

SUMMARIES = {
    "backbones": "list the known encoders, their sizes, and whether each loads offline",
    "baseline": "score the MFCC-statistics baseline or a frozen encoder's linear probe on a prepared corpus",
    "corpus": "inspect a prepared corpus",
    "evaluate": "score a trained run on another prepared corpus (cross-corpus evaluation)",
    "export": "export a trained run to ONNX",
    "import": "convert a model the PEFT-SER study released (peft-ser package) into a sertune checkpoint",
    "params": "count the trained parameters of a method or a run",
    "predict": "predict the emotion of audio files with a trained run",
    "prepare": "read a corpus into manifest.csv + folds.json",
    "report": "tables (UAR, fairness, parameters) and plots of trained runs",
    "serve": "serve trained runs over HTTP (FastAPI)",
    "sweep": "run a grid of training runs (the study's experiments), locally or on SLURM, resumably",
    "synth": "generate a synthetic emotional-speech corpus with espeak-ng",
    "train": "train and evaluate a method with cross-validation",
}
