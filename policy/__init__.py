"""The ALT policy: contrastive encoder, lookup table of every training frame, OOD gate and its calibration, the policy folder, versions (corrections added without retraining)."""
