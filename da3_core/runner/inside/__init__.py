"""The runner's code that runs inside a worker process or a Ray actor. Torch-free: the
parent names these modules (the worker's entry point, the actor class) and must be able to
import them without importing torch; task bodies import heavy things themselves."""
