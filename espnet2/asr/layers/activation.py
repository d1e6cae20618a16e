"""Activations by name, for the YAML options of our encoders and layers.

ESPnet's ``get_activation`` has no GELU; wav2vec 2.0 and SummaryMixing need it.
"""

import torch

ACTIVATIONS = {
    "relu": torch.nn.ReLU,
    "gelu": torch.nn.GELU,  # exact erf form, as fairseq and Hugging Face "gelu"
    "swish": torch.nn.SiLU,  # = ESPnet's Swish, x * sigmoid(x)
}


def build_activation(name: str) -> torch.nn.Module:
    """A new activation module called ``name`` (one of ACTIVATIONS)."""
    if name not in ACTIVATIONS:
        raise ValueError(
            f"activation must be one of {sorted(ACTIVATIONS)}, got {name!r}"
        )
    return ACTIVATIONS[name]()
