"""LoRA training: dataset intake and report, the kohya-style trainer, versions.

- `intake.py` (untrusted zips/folders) and `sessions.py` (chat uploads, one file at a time) →
  `layout.py` (kohya's `<repeats>_<concept>/` folders) → `report.py` (the quality report);
  `text.py` holds every zh/en text of those; `buckets.py` the aspect-ratio buckets.
- `params.py`: the parameters and their checks (no torch); `trainer.py`: the trainer
  (`run_training` is what a queue job of kind "train" runs).
- `versions.py`: `<ip>-vN` versions, promote / rollback / register / export.
"""
