"""hdiff: image datasets from prompt corpora, sharing the early denoising steps of similar prompts.

Method: Decatur et al., "Reusing Computation in Text-to-Image Diffusion for Efficient Generation of Image Sets",
ICCV 2025 (arXiv 2508.21032).
"""

__version__ = "0.1.0"
