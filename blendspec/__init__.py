"""blendspec: declare the blending layer of a recommender as a spec, then validate, compile and run it."""

__version__ = "0.1.0"

from blendspec import _moved

_moved.install()
