"""Vectors: batched encoding with decode workers, the content-keyed embedding cache, the clip-retrieval layout."""
