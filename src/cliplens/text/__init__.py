"""Text for the model: prompts and template sets, label banks and their cached vectors, the reference vocabulary."""
