"""skipnet_sweep: SkipNets (dynamically routed ResNets) and their accuracy/FLOPs sweeps."""

__version__ = "0.1.0"
