"""DA3 code that runs only inside a worker process or Ray actor (it imports torch and
depth_anything_3). The parent never imports these modules, except inside task bodies.

The runner's own torch-free code for the worker side lives in `da3_core.runner.inside`.
"""
