"""The diner's H5 page (static/) and a Python H5 client."""
