"""poc-twin: ISA-88 batch control and a digital twin for point-of-care cell therapy."""

__version__ = "0.1.0"
