"""Where models come from. ``registry`` is the one resolver (embedded and released names, model
directories, training workdirs, released ``.pt`` files); ``model_dir`` the one model-directory format;
``embedded`` the shipped models' names and folders; ``released`` OpenAI's checkpoints in the cache;
``workdir`` a training run's newest EMA weights; ``download`` (verified), the torch-free ``.pt`` reader
and the torch-to-Flax conversion tables."""
