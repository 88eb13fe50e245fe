"""Fused training kernels: whole epochs or data passes as single kernels, called from the same
jitted ``lax.scan`` over epochs as the XLA path they replace (see ``train``)."""
