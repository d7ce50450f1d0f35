"""What a run leaves on disk: Orbax checkpoints and the checks every read makes (checkpoint,
checkpoint_trust), params copies and weights-only folders (params_file, weights),
config.json and history.jsonl (run_files), the workdir as a whole (workdir), and whole models
(model_files: save_model, load_model).

Imports: the top level, runtime/, data/ and model/. It never imports training/.
"""
