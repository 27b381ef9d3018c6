"""Triton kernels of cnnxfer, one module per op (installed as cnnxfer.kernels).

Importing a module here imports triton; cnnxfer imports them only when the Triton backend is asked
for, so that `import cnnxfer` stays cheap and works without triton.
"""
