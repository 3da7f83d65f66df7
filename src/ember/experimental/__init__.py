"""Ray's ``ray.experimental`` names that programs use: ``tqdm_ray``, and the
tensor-transport API (see tensor_transport.py for what ember does with it)."""
from .tensor_transport import (CommunicatorMetadata, TensorTransportManager,
                               TensorTransportMetadata, register_tensor_transport)

__all__ = ["CommunicatorMetadata", "TensorTransportManager", "TensorTransportMetadata",
           "register_tensor_transport"]
