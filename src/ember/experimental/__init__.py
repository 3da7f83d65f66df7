"""Ray's ``ray.experimental`` names that programs use: ``tqdm_ray``."""
