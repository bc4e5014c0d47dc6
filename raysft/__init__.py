"""raysft: supervised fine-tuning of chat models (LoRA / QLoRA / full) on Ray."""

import logging

# bitsandbytes warns at import on CPUs with AVX512-BF16 that an optional download-only kernel is missing;
# raysft never uses that kernel (see raysft.model.load), so the warning only misleads.
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)

__version__ = "0.1.0"
