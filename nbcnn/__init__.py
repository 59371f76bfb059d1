"""nbcnn: convolutional networks written by hand, on Numba and OpenCL backends."""

__version__ = "0.1.0"
