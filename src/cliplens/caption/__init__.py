"""Captions for language models from label banks: :class:`Captioner`, and fitting a bank's calibration."""

from .bank_fit import BankFit, calibrate_bank
from .captioner import Caption, CaptionLabel, Captioner, caption

__all__ = ["BankFit", "Caption", "CaptionLabel", "Captioner", "calibrate_bank", "caption"]
