"""Where ``TrackingCallback`` lived before the Ray layer was split (``trials``,
``train_worker``, ``trial_checkpoints``, ``tracking_callback``): Tune pickles a sweep's
callbacks into its ``tuner.pkl`` by this path, so a sweep saved then still restores."""

from skipnet_sweep.sweep.tracking_callback import TrackingCallback

__all__ = ["TrackingCallback"]
