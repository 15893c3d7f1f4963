"""Headend: billing, subscriber management and network provisioning for ISPs."""

from headend.plugins.hookspecs import hookimpl

__all__ = ["hookimpl"]
__version__ = "0.1.0"
