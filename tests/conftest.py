"""Test set-up: Triton kernels run in the interpreter on machines without a GPU."""
import os

# Must be set before triton is first imported (torch imports it lazily).
if not os.path.exists("/dev/nvidia0") and "TRITON_INTERPRET" not in os.environ:
    os.environ["TRITON_INTERPRET"] = "1"
