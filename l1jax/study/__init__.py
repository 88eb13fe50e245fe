"""The built-in study of the article's question: its code verbatim, its experiment, the study sweeps."""
