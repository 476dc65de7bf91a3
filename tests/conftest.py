import os
import sys

import torch
from hypothesis import settings

sys.path.insert(0, os.path.dirname(__file__))

settings.register_profile("default", max_examples=40, deadline=None)
settings.register_profile("thorough", max_examples=600, deadline=None)
settings.register_profile("ci", max_examples=40, deadline=None, derandomize=True)
settings.load_profile(
    os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") else "default")
)

# the fused Triton kernels (backend="triton") run in Triton's interpreter without CUDA; read
# when pgmunfold first imports its kernels
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

# small tensors: one intra-op thread avoids oversubscription on the 2-core CI machines
torch.set_num_threads(1)
