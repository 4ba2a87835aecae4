"""Pure maths on similarities: probabilities, calibration, conformal sets, metrics and group disparities.

Nothing here imports the rest of cliplens but its files and errors (an import-linter contract checks it).
"""
