"""Code that runs only inside the worker process (it may import torch and depth_anything_3).

The parent imports nothing from here except `context` and `loop` names used to start the
worker; those two modules never import torch themselves.
"""
