"""The isolation runner's tests (`da3_core.runner`): its contract on every backend, the worker
pool, Ray, shared memory, the capture of third-party output in workers, and faults ten times
in a row. Tasks they run are in `tests.fake_tasks`; waiting helpers in `tests.runner.waiting`."""
