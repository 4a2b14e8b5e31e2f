"""Where calls run: one small interface (`base.Slot`) and its implementations.

* `process`: a spawned worker process per slot (a pool: one per GPU);
* `inprocess`: the calling process itself (debugging only; no isolation);
* `ray`: a Ray actor per slot (one per GPU of a Ray cluster).
"""
