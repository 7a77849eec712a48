"""LoRA training: dataset intake and report, the kohya-style trainer, versions.

- `dataset.py`: untrusted zips/folders/chat uploads → a clean kohya-layout dataset + a report.
- `lora.py`: the trainer (`run_training` is what a queue job of kind "train" calls).
- `versions.py`: `<ip>-vN` versions, promote / rollback / register / export.
"""
