"""Autograd Functions for the fused and unfused op families."""
