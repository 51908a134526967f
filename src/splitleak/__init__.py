"""splitleak: audit how much of an input an untrusted cloud can rebuild in split inference."""

__version__ = "0.1.0"
