"""forescale: scale Kubernetes workloads before their traffic arrives."""

__version__ = "0.1.0"
