"""stylekit: fast neural style transfer (Johnson et al., ECCV 2016) at scale on Ray."""

__version__ = "0.1.0"
