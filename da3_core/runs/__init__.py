"""A run's life in the parent, no Streamlit, no torch: the run service that owns every worker
job (`service`), runs on disk (`records`, `workspace`), the guard's estimates (`guard`), the
tasks sent to the worker (`tasks`), what the workers' warnings mean (`notices`), and demo
weights (`demo_weights`)."""
