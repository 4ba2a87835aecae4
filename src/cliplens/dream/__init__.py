"""CLIP-guided image synthesis (``cliplens dream``): :func:`dream` and the image parameterisations behind it."""

from .synthesis import (DEFAULT_CUTOUTS, DEFAULT_GUIDANCE, DEFAULT_INIT_WEIGHT, DEFAULT_LR, DEFAULT_STEPS,
                        DEFAULT_TV_WEIGHT, GUIDANCE, Dream, check_options, check_size, dream, save_gif, torch_encoder)

__all__ = ["DEFAULT_CUTOUTS", "DEFAULT_GUIDANCE", "DEFAULT_INIT_WEIGHT", "DEFAULT_LR", "DEFAULT_STEPS",
           "DEFAULT_TV_WEIGHT", "GUIDANCE", "Dream", "check_options", "check_size", "dream", "save_gif",
           "torch_encoder"]
